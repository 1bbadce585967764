"""Settings of `medaudit demo --dataset D`: sized to finish in minutes on a 2-core CPU.

The demo trains each dataset's ``quick`` recipe preset (tasks/datasets/recipes.py, ``DatasetAdapter.default_pools``):
the paper's recipes (method §2.2) need GPUs; ``quick`` keeps each modality's architecture family
but shrinks width and epochs so the demo shows the phenomenon on synthetic data of that modality.
Measured wall times and headline numbers of each demo are in docs/DATASETS.md.
"""

from __future__ import annotations

import copy
from typing import Any

# Default `--patients` of each demo cohort. The image and ECG cohorts are smaller than the ED one:
# a conv net step costs far more than an MLP step on 2 CPU cores. Records per patient differ (CXR
# patients have several images, Fitzpatrick17k and FairVision one each).
DEMO_PATIENTS: dict[str, int] = {
    "mimic-iv-ed": 2000,
    "ptb-xl": 150,
    "chexpert": 200,
    "mimic-cxr": 160,
    "fitzpatrick": 500,
    "fairvision": 500,
    "embed": 120,
}
DEFAULT_DEMO_PATIENTS = 2000

# Adapter options of the demo (a --config file's dataset_options win). Images are decoded at 32 pixels
# (the adapters' default is the paper's 64): a conv step costs about a third, and the synthetic
# findings stay visible.
DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    "chexpert": {"image_size": 32},
    "mimic-cxr": {"image_size": 32},
    "fitzpatrick": {"image_size": 32},
    "fairvision": {"image_size": 32},
    "embed": {"image_height": 32},
}


DEMO_RECIPE = "quick"


def demo_pool(dataset: str) -> dict[str, Any]:
    """The demo pool settings of ``dataset``: its ``quick`` preset (empty when it has none); a copy."""
    from tasks.datasets import get_dataset

    return copy.deepcopy(type(get_dataset(dataset)).default_pools.get(DEMO_RECIPE, {}))


def demo_options(dataset: str) -> dict[str, Any]:
    """The adapter options of the ``dataset`` demo (empty: the adapter's defaults)."""
    return dict(DEMO_OPTIONS.get(dataset, {}))


def demo_patients(dataset: str) -> int:
    """The default cohort size of ``medaudit demo --dataset <dataset>``."""
    return DEMO_PATIENTS.get(dataset, DEFAULT_DEMO_PATIENTS)

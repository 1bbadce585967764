"""Pool settings for `medaudit demo --dataset D`: sized to finish in minutes on a 2-core CPU.

The paper's recipes (paper-method.md §2.2) need GPUs; these keep each modality's architecture family
but shrink width and epochs so the demo shows the phenomenon on synthetic data of that modality.
Measured wall times and headline numbers of each demo are in docs/DATASETS.md.
"""

from __future__ import annotations

import copy
from typing import Any

_SMALL_CNN = {"name": "small_cnn", "params": {"width_multiplier": 0.25}}
# bf16 autocast + channels_last roughly halve a CPU training step of the small CNN (ENVIRONMENT.md).
_IMAGE_RECIPE = {"epochs": 30, "batch_size": 32, "learning_rate": 0.05, "precision": "bf16", "channels_last": True}

DEMO_POOLS: dict[str, dict[str, Any]] = {
    # An MLP that memorises atypical stays while generalising on typical ones (tuned on the synthetic
    # ED cohort: aggregate LiRA AUC about 0.63, highest record AUC about 1.0).
    "mimic-iv-ed": {
        "architecture": {"name": "mlp", "params": {"width": 128, "depth": 2}},
        "recipe": {"epochs": 40, "batch_size": 128, "learning_rate": 0.01, "weight_decay": 5e-4, "momentum": 0.9, "warmup_fraction": 0.05},
    },
    # The paper's 1-D ResNet at F=16 (the paper: 128) on 12 x 1000 ECGs. float32: a GroupNorm net trained
    # under bf16 autocast scores differently in float32, which is how models are scored.
    "ptb-xl": {
        "architecture": {"name": "resnet1d", "params": {"filters": 16}},
        "recipe": {"epochs": 20, "batch_size": 16, "learning_rate": 0.05},
    },
    # Images: the paper's small CNN at a quarter of its width, two evaluation views (identity + flip),
    # 30 epochs: enough to memorise the atypical presentations the synthetic writers plant (3%).
    "chexpert": {"architecture": _SMALL_CNN, "recipe": _IMAGE_RECIPE, "eval_views": 2},
    "mimic-cxr": {"architecture": _SMALL_CNN, "recipe": _IMAGE_RECIPE, "eval_views": 2},
    "fitzpatrick": {"architecture": _SMALL_CNN, "recipe": _IMAGE_RECIPE, "eval_views": 2},
    "fairvision": {"architecture": _SMALL_CNN, "recipe": _IMAGE_RECIPE, "eval_views": 2},
    "embed": {"architecture": _SMALL_CNN, "recipe": _IMAGE_RECIPE, "eval_views": 2},
}

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


def demo_pool(dataset: str) -> dict[str, Any]:
    """The demo pool settings of ``dataset`` (empty: the config defaults); a copy, safe to modify."""
    return copy.deepcopy(DEMO_POOLS.get(dataset, {}))


def demo_options(dataset: str) -> dict[str, Any]:
    """The adapter options of the ``dataset`` demo (empty: the adapter's defaults)."""
    return dict(DEMO_OPTIONS.get(dataset, {}))


def demo_patients(dataset: str) -> int:
    """The default cohort size of ``medaudit demo --dataset <dataset>``."""
    return DEMO_PATIENTS.get(dataset, DEFAULT_DEMO_PATIENTS)

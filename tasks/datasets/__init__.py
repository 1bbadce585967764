"""Dataset adapters, one module per dataset, behind a registry.

Every module in this package is imported on first use, so a new dataset is one new file whose
adapter class carries ``@register_dataset``.

``contracts`` (column contracts and their great-expectations suites), ``quarantine`` and ``reasons`` (rejected
rows with a reason that never quotes an identifier) serve every adapter; ``recipes`` holds each dataset's
recipe presets (``--recipe paper|quick``).

May import: tasks.config, tasks.errors.
"""

import importlib
import pkgutil

from tasks.datasets.base import DatasetAdapter, InputChunk, TaskSpec, get_dataset, list_datasets, register_dataset

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in {"base"}:
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["DatasetAdapter", "InputChunk", "TaskSpec", "get_dataset", "list_datasets", "register_dataset"]

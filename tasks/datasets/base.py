"""What a dataset adapter is (design D1), and the registry of adapters.

An adapter reads a dataset's *published* layout and yields the canonical pieces the rest of
medaudit understands:

* ``read_records``: the raw tables validated against the dataset's contract and the paper's cohort
  filters applied, as a frame with one row per record and the columns
  ``raw_patient_id, split ('train'|'test'), y_<label>..., <subgroup attributes>..., _source_file,
  _source_row``. Everything dropped is in the quarantine with its reason.
* ``decode_inputs``: the model inputs of a chunk of those records, float32 of shape
  (n, *task.input_shape), plus a reason for every record whose input could not be read.

Adding a dataset = one module in ``tasks/datasets/`` with a subclass decorated by ``@register_dataset``
(``tasks/datasets/__init__.py`` imports every module of the package) and its contract
``data_contracts/<name>.yaml`` (dashes as underscores). A dataset described by a spec file needs no code:
``get_dataset("spec:<path>")`` builds its adapter (tasks/datasets/spec.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from tasks.datasets.contracts import DatasetContract, load_contract
from tasks.datasets.quarantine import Quarantine
from tasks.errors import ConfigError

TaskKind = Literal["binary", "multiclass", "multilabel"]


@dataclass(frozen=True)
class TaskSpec:
    """The prediction task of a dataset: what the labels are and what a model sees."""

    kind: TaskKind
    label_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    modality: Literal["tabular", "image", "signal"]
    score_transform: str  # name in tasks.attacks.scores registry
    default_architecture: str
    flip_views_ok: bool = False  # horizontal flip preserves the label (design D8)

    @property
    def n_outputs(self) -> int:
        return len(self.label_names)


@dataclass
class InputChunk:
    """Decoded inputs for records at ``positions`` (rows of the records frame).

    ``x`` has shape (len(ok_positions), *input_shape); ``failures`` maps a position to its reason.
    """

    ok_positions: np.ndarray
    x: np.ndarray
    failures: dict[int, str]


class DatasetAdapter(ABC):
    name: ClassVar[str]
    task: ClassVar[TaskSpec]
    description: ClassVar[str] = ""
    # Files (relative to raw_dir) whose presence identifies the layout; shown by `medaudit datasets`.
    layout: ClassVar[tuple[str, ...]] = ()
    # Recipe presets (tasks/datasets/recipes.py): name -> PoolConfig fragment {"architecture": {"name", "params"},
    # "recipe": {TrainRecipe fields}, "eval_views": n}. Every built-in adapter has "paper" and "quick".
    default_pools: ClassVar[dict[str, dict[str, Any]]] = {}
    # The options the adapter reads (name -> what it does); any other name is rejected. None: not checked.
    option_help: ClassVar[dict[str, str] | None] = None

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = dict(options or {})
        if self.option_help is not None:
            unknown = sorted(set(self.options) - set(self.option_help))
            if unknown:
                known = ", ".join(sorted(self.option_help)) or "none"
                raise ConfigError(f"dataset {self.name!r}: unknown option(s) {', '.join(unknown)}; its options: {known}")

    @property
    def contract(self) -> DatasetContract:
        return load_contract(self.name)

    @property
    def subgroup_attributes(self) -> list[str]:
        return list(self.contract.subgroups)

    @abstractmethod
    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        """Validated, cohort-filtered records (see module docstring)."""

    @abstractmethod
    def decode_inputs(self, records: pd.DataFrame, raw_dir: Path) -> InputChunk:
        """Model inputs for ``records`` (a chunk of the frame from read_records, index = positions)."""

    def n_raw_rows(self, raw_dir: Path) -> int | None:
        """Raw rows of the primary table, for the accepted + quarantined reconciliation."""
        return None


_DATASETS: dict[str, type[DatasetAdapter]] = {}


def register_dataset(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    if cls.name in _DATASETS:
        raise ValueError(f"dataset {cls.name!r} registered twice")
    _DATASETS[cls.name] = cls
    return cls


def get_dataset(name: str, options: dict[str, Any] | None = None) -> DatasetAdapter:
    """The adapter of a registered dataset, or of a dataset spec file given as ``spec:<path>``."""
    if name.startswith("spec:"):
        from tasks.datasets.spec import adapter_from_spec

        return adapter_from_spec(Path(name.removeprefix("spec:")), options)
    try:
        cls = _DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(sorted(_DATASETS))}, or spec:<file>") from None
    return cls(options)


def dataset_default_architecture(name: str) -> str | None:
    """The default architecture of dataset ``name`` (None if it is not registered)."""
    import tasks.datasets  # noqa: F401  (registers the built-in adapters)

    if name.startswith("spec:"):
        return get_dataset(name).task.default_architecture
    cls = _DATASETS.get(name)
    return cls.task.default_architecture if cls is not None else None


def list_datasets() -> list[type[DatasetAdapter]]:
    return [_DATASETS[k] for k in sorted(_DATASETS)]

"""Synthetic cohorts written in the clinical datasets' published layouts (demos and tests).

A writer is ``write(raw_dir: Path, n_patients: int, seed: int = 0) -> Path`` registered under the
dataset's name with ``@register_synthetic``; every module here is imported on first use.

``demo_pools`` holds the pool settings of `medaudit demo` per dataset.

May import: tasks.datasets, tasks.config, tasks.errors.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

Writer = Callable[..., Path]
_WRITERS: dict[str, Writer] = {}


def register_synthetic(dataset: str) -> Callable[[Writer], Writer]:
    def decorate(fn: Writer) -> Writer:
        if dataset in _WRITERS:
            raise ValueError(f"synthetic writer for {dataset!r} registered twice")
        _WRITERS[dataset] = fn
        return fn

    return decorate


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def get_synthetic_writer(dataset: str) -> Writer:
    _discover()
    try:
        return _WRITERS[dataset]
    except KeyError:
        raise KeyError(f"no synthetic cohort for {dataset!r}; available: {', '.join(sorted(_WRITERS))}") from None


def synthetic_datasets() -> list[str]:
    _discover()
    return sorted(_WRITERS)


def write_cohort_once(dataset: str, raw_dir: Path, n_patients: int, seed: int = 0) -> bool:
    """Write ``dataset``'s synthetic cohort to ``raw_dir`` unless it is there; True if written now.

    Written under a temporary name of its own and renamed when complete: an interrupted write never
    passes for a cohort, and of two runs writing the same cohort (same size and seed) at once the
    second finds the first's and uses it instead of deleting it.
    """
    if raw_dir.exists():
        return False
    write = get_synthetic_writer(dataset)
    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=raw_dir.name + ".partial-", dir=raw_dir.parent))
    try:
        write(partial, n_patients, seed)
        try:
            partial.rename(raw_dir)
        except OSError:
            if not raw_dir.exists():
                raise
            return False
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return True

"""Synthetic cohorts written in the clinical datasets' published layouts (demos and tests).

A writer is ``write(raw_dir: Path, n_patients: int, seed: int = 0) -> Path`` registered under the
dataset's name with ``@register_synthetic``; every module here is imported on first use.
"""

from __future__ import annotations

import importlib
import pkgutil
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

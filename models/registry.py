"""Architecture registry: name -> builder(input_shape, n_outputs, **params) -> nn.Module.

Adding an architecture is one new module in ``models/`` with a ``@register_architecture`` builder:
``models/__init__.py`` imports every module of the package, so nothing else needs an edit.
:func:`build_model` refuses an architecture registered for another input modality.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ArchitectureEntry:
    name: str
    builder: Builder
    modalities: frozenset[str]
    description: str


_ARCHITECTURES: dict[str, ArchitectureEntry] = {}


def register_architecture(name: str, modalities: set[str], description: str = "") -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} registered twice")
        _ARCHITECTURES[name] = ArchitectureEntry(
            name, builder, frozenset(modalities), description or (builder.__doc__ or "").strip().split("\n")[0]
        )
        return builder

    return decorate


def get_architecture(name: str) -> ArchitectureEntry:
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(_ARCHITECTURES))
        raise KeyError(f"unknown architecture {name!r}; registered: {known}") from None


def list_architectures() -> list[ArchitectureEntry]:
    return [_ARCHITECTURES[k] for k in sorted(_ARCHITECTURES)]


def build_model(name: str, input_shape: tuple[int, ...], n_outputs: int, modality: str, **params: object) -> nn.Module:
    """Build a registered architecture; refuses one that does not fit the dataset's modality."""
    entry = get_architecture(name)
    if modality not in entry.modalities:
        raise ValueError(f"architecture {name!r} is for {sorted(entry.modalities)} inputs, not {modality!r}")
    return entry.builder(input_shape=input_shape, n_outputs=n_outputs, **params)

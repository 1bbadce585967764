"""Which published layout of a dataset is in ``raw_dir``: the same data ships in several folder trees
(CheXpert full and downsampled, EMBED with ``tables/`` + ``png/<size>/`` or flat, ...). An adapter lists
its variants; ``detect_variant`` picks the first whose marker files exist, and otherwise raises an error
that lists every file looked for, per variant, and the ``--option`` that points at another folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.errors import StructuralError


@dataclass(frozen=True)
class LayoutVariant:
    """A published folder tree: ``markers`` (relative to raw_dir) all exist when it is the one present;
    ``settings`` are the adapter settings it implies (e.g. the release folder's name)."""

    name: str
    markers: tuple[str, ...]
    settings: dict[str, str] = field(default_factory=dict)

    def present(self, raw_dir: Path) -> bool:
        return all((Path(raw_dir) / m).exists() for m in self.markers)


def detect_variant(dataset: str, raw_dir: Path, variants: Sequence[LayoutVariant], options_hint: str) -> LayoutVariant:
    """The first variant of ``variants`` present in ``raw_dir``; StructuralError naming what was looked
    for under which variant, and ``options_hint`` (the options that select a folder), when none is."""
    raw_dir = Path(raw_dir)
    for variant in variants:
        if variant.present(raw_dir):
            return variant
    if not raw_dir.is_dir():
        raise StructuralError(raw_dir, "folder not found", expected=f"the folder that holds {dataset} as downloaded")
    looked = "; ".join(f"{v.name}: {', '.join(v.markers)}" for v in variants)
    raise StructuralError(
        raw_dir,
        f"no published layout of {dataset} found (looked for {looked})",
        expected=f"one of these layouts under the raw folder, or set {options_hint}",
    )

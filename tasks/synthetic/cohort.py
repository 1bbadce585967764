"""Pieces every synthetic writer needs: starting a cohort, planting awkward rows and files.

A writer plants the cases real downloads contain (unreadable images, duplicate rows, ...) on rows it
records in ``_synthetic_truth.csv`` with the fate the adapter must give them; the adapters never read
that file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

TRUTH_FILE = "_synthetic_truth.csv"


def start_cohort(raw_dir: Path, n_patients: int, seed: int, minimum: int) -> tuple[Path, np.random.Generator]:
    """Check the cohort size, create ``raw_dir`` and return it with the writer's seeded generator."""
    if n_patients < minimum:
        raise ValueError(f"n_patients must be at least {minimum}, got {n_patients}")
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    return raw_dir, np.random.default_rng(seed)


def assign_plants(frame: pd.DataFrame, rows: Iterable[int], plants: Iterable[tuple[str, str]]) -> None:
    """Give the rows ``rows`` (index labels, in order) one (plant, stage) each, in the columns
    ``plant`` and ``stage``; surplus rows or plants are left alone."""
    for i, (plant, stage) in zip(rows, plants, strict=False):
        frame.loc[i, "plant"], frame.loc[i, "stage"] = plant, stage


def truncate_file(path: Path, divisor: int) -> None:
    """Keep the first 1/``divisor`` of a file's bytes (a download cut short)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // divisor])


def write_unreadable_file(path: Path, plant: str, text: str = "<html><body>404 Not Found</body></html>\n") -> bool:
    """Plant an image that was never downloaded (``missing_image``: nothing written) or a text file
    under the image's name (``text_as_jpeg``). Returns False, writing nothing, for any other plant."""
    if plant == "missing_image":
        return True
    if plant == "text_as_jpeg":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return True
    return False


def save_planted_jpeg(img: Image.Image, path: Path, plant: str) -> bool:
    """Write ``img`` as the planted JPEG ``plant`` asks for: ``cmyk_jpeg`` (a mode PIL would convert
    lossily), ``grayscale_jpeg`` (valid, single channel) or ``truncated_jpeg`` (the first third).
    Returns False, writing nothing, for any other plant: the caller saves an ordinary file."""
    if plant == "cmyk_jpeg":
        img.convert("CMYK").save(path, "JPEG", quality=90)
    elif plant == "grayscale_jpeg":
        img.convert("L").save(path, "JPEG", quality=90)
    elif plant == "truncated_jpeg":
        img.save(path, "JPEG", quality=90)
        truncate_file(path, 3)
    else:
        return False
    return True


# Atypical presentations: records whose picture or signal shows the findings of another label (an
# unusual course, or a mislabeled record). A model gets one right only by memorising it, which is
# what makes some patients far more exposed than the average (the paper's phenomenon).
ATYPICAL = "atypical_presentation"
ATYPICAL_SHARE = 0.03


def mark_atypical(plant: np.ndarray, seed: int, share: float) -> tuple[np.ndarray, np.random.Generator]:
    """Mark about ``share`` of the unplanted rows (``plant == ''``) as ATYPICAL, in place; return their
    positions and the generator to draw them with. That generator is separate from the writer's, so
    every other row comes out the same whatever ``share`` is."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"atypical share must be in [0, 1), got {share}")
    rng = np.random.default_rng([abs(int(seed)), 0xA7])
    free = np.flatnonzero(plant == "")
    rows = np.sort(rng.choice(free, size=round(share * len(free)), replace=False)) if len(free) else np.array([], dtype=np.int64)
    plant[rows] = ATYPICAL
    return rows, rng


def another(rng: np.random.Generator, values: Iterable[str], current: str) -> str:
    """A value of ``values`` other than ``current`` (the label an atypical record looks like)."""
    others = [v for v in values if v != current]
    return str(rng.choice(others))

"""Fitzpatrick17k (paper-method.md §1.3): clinical skin images -> one record (= one patient) per image.

``raw_dir`` is the folder a user gets by downloading the Fitzpatrick17k CSV from its GitHub
repository and the images from its ``url`` column::

    raw_dir/
      fitzpatrick17k.csv      md5hash, fitzpatrick_scale, fitzpatrick_centaur, label,
                              nine_partition_label, three_partition_label, qc, url, url_alphanum
      <md5hash>.jpg           one image per row (the layout the paper's downloader writes) ...
      images/<md5hash>.jpg    ... or in an ``images/`` subfolder; both are looked up, the top level first

As the paper (``fitzpatrick.ipynb``):

* patient = ``md5hash``: every image is its own patient, so record level = patient level;
* the three images the paper flagged as non-dermatology (MRI / X-ray) are excluded (stage 'cohort');
  option ``exclude_hashes`` (list of md5 hashes) replaces that list, ``[]`` keeps them;
* task: 3-class coarse label ``three_partition_label`` (non-neoplastic, malignant, benign), one-hot;
* split: ``qc == "1 Diagnostic"`` (expert-verified) -> test, everything else -> train;
* subgroups: skin type from ``fitzpatrick_scale`` (1-2 Type I/II, 3-4 Type III/IV, 5-6 Type V/VI,
  -1 or empty Unknown) and the nine-partition label as the disease grouping.

Where medaudit differs from the notebook: the paper drops rows whose download failed before building
the CSV; here a row whose image is missing or unreadable stays a record until decoding, where it is
quarantined (stage 'decode') with the reason. A repeated ``md5hash`` (the same image listed twice)
keeps its first row; later copies are quarantined (stage 'dedupe'). An ``md5hash`` that is not 32 hex
digits is a contract failure: it names a file, so it must not be able to point outside ``raw_dir``.

Inputs: RGB resized to ``image_size`` x ``image_size`` (option, default 64; 128 for ViT runs), float32
in [-1, 1], channels-first (3, S, S). Grayscale JPEGs are replicated to RGB by PIL; colour modes PIL
would convert lossily (CMYK, 16-bit) are decode failures rather than silently altered inputs.

The image helpers at the top of this module are shared with the FairVision and EMBED adapters.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from tasks.contracts import read_csv_as_strings, validate_table
from tasks.datasets.base import DatasetAdapter, InputChunk, TaskSpec, register_dataset
from tasks.datasets.imaging import DecodeError, load_image
from tasks.errors import ConfigError
from tasks.quarantine import Quarantine

CSV_NAME = "fitzpatrick17k.csv"
IMAGE_SUBDIR = "images"
DEFAULT_IMAGE_SIZE = 64
# FITZPATRICK_LABELS_COARSE of the paper, in its order (the one-hot column order).
COARSE_LABELS: tuple[str, ...] = ("non-neoplastic", "malignant", "benign")
# The three md5 hashes the paper's notebook flags as MRI / X-ray images (not dermatology photographs).
NON_DERMATOLOGY_HASHES: tuple[str, ...] = (
    "2ea034fc482e9bd21a5dfa2506cc5d6b",
    "bccab73c32aba48c90602de9bb458272",
    "e69165b3455bb3a5a8b33a0f6fd8a1d3",
)
TEST_QC = "1 Diagnostic"
_MD5_RE = r"[0-9a-fA-F]{32}"

# ---------------------------------------------------------------------------------------------
# helpers shared by the image adapters (fitzpatrick, fairvision, embed)


def label_column(name: str) -> str:
    """Records-frame column of a label: ``y_`` + lower case, non-alphanumerics -> '_' (as the snapshot)."""
    return "y_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def one_hot(codes: np.ndarray, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Integer class codes (n,) -> {y_<label>: float64 (n,)} one-hot columns in ``labels`` order."""
    codes = np.asarray(codes, dtype=np.int64)
    return {label_column(name): (codes == k).astype(np.float64) for k, name in enumerate(labels)}


def count_data_rows(path: Path) -> int:
    """Data rows of a CSV (header and blank lines excluded; quoted newlines are one row)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return max(sum(1 for row in csv.reader(fh) if row) - 1, 0)


def int_option(options: dict[str, Any], key: str, default: int, minimum: int) -> int:
    """A whole-number option, validated (ConfigError naming the option otherwise)."""
    raw = options.get(key, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = minimum - 1
    if isinstance(raw, bool) or value < minimum or str(value) != str(raw).strip():
        raise ConfigError(f"option {key} must be a whole number >= {minimum}, got {raw!r}")
    return value


def image_mode(path: Path) -> str | None:
    """The PIL mode of an image file from its header only; None if PIL cannot identify it
    (load_image then gives the precise reason)."""
    try:
        with Image.open(path) as img:
            return str(img.mode)
    except Exception:  # any header problem is reported by load_image with its own message
        return None


def decode_image_files(
    positions: Iterable[int],
    paths: Iterable[Path],
    size: tuple[int, int],
    *,
    mode: str,
    accepted_modes: frozenset[str],
    channel0: bool = False,
) -> InputChunk:
    """Decode image files into an InputChunk: x float32 (n_ok, C, H, W) in [-1, 1], channels-first.

    ``size`` is (H, W); ``mode`` 'L' gives C=1, 'RGB' C=3 (``channel0`` keeps the first channel, C=1).
    A file whose stored mode is not in ``accepted_modes`` is a failure: PIL would convert it (CMYK
    inverted, 16-bit clipped to white), which yields a plausible-looking but wrong input.
    """
    ok: list[int] = []
    images: list[np.ndarray] = []
    failures: dict[int, str] = {}
    channels = 1 if (mode == "L" or channel0) else 3
    for pos, path in zip(positions, paths, strict=True):
        path = Path(path)
        stored = image_mode(path) if path.exists() else None
        if stored is not None and stored not in accepted_modes:
            failures[int(pos)] = f"{path.name}: unsupported image mode {stored!r} (expected one of {sorted(accepted_modes)})"
            continue
        try:
            img = load_image(path, size, mode="RGB" if mode == "RGB" else "L", channel0=channel0)  # (H, W, C)
        except DecodeError as exc:
            failures[int(pos)] = str(exc)
            continue
        ok.append(int(pos))
        images.append(img.transpose(2, 0, 1))
    x = np.stack(images).astype(np.float32, copy=False) if images else np.empty((0, channels, *size), dtype=np.float32)
    return InputChunk(ok_positions=np.asarray(ok, dtype=np.int64), x=x, failures=failures)


def keep_first(df: pd.DataFrame, key: str, what: str, quarantine: Quarantine) -> pd.DataFrame:
    """Keep the first row of each ``key`` value; later copies -> quarantine (stage 'dedupe')."""
    dup = df[key].duplicated(keep="first")
    if dup.any():
        first = df.groupby(key, sort=False)["_source_row"].transform("first")
        reasons = (
            f"{key}: the same {what} "
            + df.loc[dup, key].map(repr).astype(str)
            + " as line "
            + first[dup].astype(str)
            + "; the first row is kept"
        )
        quarantine.add_rows(df[dup], "dedupe", key, reasons)
    return df[~dup].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------


def _fitz_task(image_size: int) -> TaskSpec:
    return TaskSpec(
        kind="multiclass",
        label_names=COARSE_LABELS,
        input_shape=(3, image_size, image_size),
        modality="image",
        score_transform="softmax_mass",
        default_architecture="wrn_28_2",
        flip_views_ok=True,  # a mirrored skin lesion is the same lesion
    )


@register_dataset
class Fitzpatrick17k(DatasetAdapter):
    name = "fitzpatrick"
    description = "Fitzpatrick17k skin images: 3-class coarse diagnosis, 64x64 RGB, one patient per image"
    layout = (CSV_NAME,)
    task = _fitz_task(DEFAULT_IMAGE_SIZE)

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        # The class attribute stays the paper's 64x64; an instance with image_size=128 carries its own task.
        self.task = _fitz_task(int_option(self.options, "image_size", DEFAULT_IMAGE_SIZE, 8))
        excl = self.options.get("exclude_hashes", NON_DERMATOLOGY_HASHES)
        if isinstance(excl, str) or not all(isinstance(h, str) for h in excl):
            raise ConfigError(f"option exclude_hashes must be a list of md5 hashes, got {excl!r}")
        self.exclude_hashes = frozenset(h.strip().lower() for h in excl)

    def n_raw_rows(self, raw_dir: Path) -> int:
        return count_data_rows(Path(raw_dir) / CSV_NAME)

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        """One row per accepted image: raw_patient_id (= md5hash), split, y_non_neoplastic,
        y_malignant, y_benign, skin_type, disease, image (file name), _source_file, _source_row."""
        raw = read_csv_as_strings(Path(raw_dir) / CSV_NAME)
        df = validate_table(raw, self.contract, CSV_NAME, quarantine)

        bad_hash = ~df["md5hash"].str.strip().str.fullmatch(_MD5_RE).fillna(False).astype(bool)
        quarantine.add_rows(
            df[bad_hash],
            "contract",
            "md5hash",
            "md5hash: expected 32 hexadecimal digits (the image file name), found " + df.loc[bad_hash, "md5hash"].map(repr).astype(str),
        )
        df = df[~bad_hash].reset_index(drop=True)
        df["md5hash"] = df["md5hash"].str.strip().str.lower()
        df = keep_first(df, "md5hash", "image", quarantine)

        flagged = df["md5hash"].isin(self.exclude_hashes)
        quarantine.add_rows(
            df[flagged],
            "cohort",
            "md5hash",
            "md5hash: "
            + df.loc[flagged, "md5hash"].map(repr).astype(str)
            + " is a non-dermatology image excluded by the paper (option exclude_hashes)",
        )
        df = df[~flagged].reset_index(drop=True)

        codes = df["three_partition_label"].map({name: k for k, name in enumerate(COARSE_LABELS)})
        records = pd.DataFrame(
            {
                "raw_patient_id": df["md5hash"].astype(str),
                "split": np.where(df["qc"].fillna("").str.strip() == TEST_QC, "test", "train"),
                **one_hot(codes.to_numpy(), COARSE_LABELS),
            }
        )
        for attr, sg in self.contract.subgroups.items():
            records[attr] = self.contract.map_subgroup(attr, df[sg.column])
        records["image"] = (df["md5hash"] + ".jpg").astype(str)
        records["_source_file"] = df["_source_file"]
        records["_source_row"] = df["_source_row"]
        return records

    def decode_inputs(self, records: pd.DataFrame, raw_dir: Path) -> InputChunk:
        """x float32 (n_ok, 3, S, S) in [-1, 1] for the rows of ``records`` (index = positions)."""
        raw_dir = Path(raw_dir)

        def locate(name: str) -> Path:
            # top level first (the paper's downloader); images/ when only there; else the top-level
            # path, which decoding reports as missing
            top, sub = raw_dir / name, raw_dir / IMAGE_SUBDIR / name
            return sub if not top.exists() and sub.exists() else top

        size = (self.task.input_shape[1], self.task.input_shape[2])
        return decode_image_files(
            records.index,
            [locate(n) for n in records["image"]],
            size,
            mode="RGB",
            accepted_modes=frozenset({"RGB", "L"}),
        )

"""Fitzpatrick17k (method §1.3): clinical skin images -> one record (= one patient) per image.

``raw_dir`` is the folder a user gets by downloading the Fitzpatrick17k CSV from its GitHub
repository and the images from its ``url`` column::

    raw_dir/
      fitzpatrick17k.csv      md5hash, fitzpatrick_scale, fitzpatrick_centaur, label,
                              nine_partition_label, three_partition_label, qc, url, url_alphanum
      <md5hash>.jpg           one image per row (the layout the paper's downloader writes) ...
      images/<md5hash>.jpg    ... or in ``images/`` (the dataset repository's download script); both are
                              looked up, the top level first. Option ``image_dir`` names another folder.

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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from tasks.datasets.base import DatasetAdapter, InputChunk, TaskSpec, register_dataset
from tasks.datasets.contracts import read_csv_as_strings, validate_table
from tasks.datasets.imaging import decode_image_files, image_task
from tasks.datasets.layout import count_csv_rows, int_option, one_hot, quarantine_duplicates, quarantine_unmatched, records_frame
from tasks.datasets.quarantine import Quarantine
from tasks.datasets.recipes import QUICK_IMAGE, paper_pool
from tasks.datasets.variants import LayoutVariant, detect_variant
from tasks.errors import ConfigError

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


def _fitz_task(image_size: int) -> TaskSpec:
    return image_task("multiclass", COARSE_LABELS, (3, image_size, image_size))  # a mirrored lesion is the same lesion


@register_dataset
class Fitzpatrick17k(DatasetAdapter):
    name = "fitzpatrick"
    description = "Fitzpatrick17k skin images: 3-class coarse diagnosis, 64x64 RGB, one patient per image"
    layout = (CSV_NAME, "[images/]<md5hash>.jpg")
    variants = (
        LayoutVariant("the paper's downloader (images next to the CSV)", (CSV_NAME,)),
        LayoutVariant("the repository's download script (images/)", (CSV_NAME, IMAGE_SUBDIR)),
    )
    default_pools: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": paper_pool(
            "wrn_28_2",
            epochs=100,
            learning_rate=5e-3,
            weight_decay=1e-4,
            batch_size=256,
            momentum=0.9,
            ema_decay=0.99,
            warmup_fraction=0.05,
            grad_accum_steps=1,
            augment="medium",
            eval_views=2,
        ),
        "quick": QUICK_IMAGE,
    }
    option_help: ClassVar[dict[str, str] | None] = {
        "image_size": "input side in pixels (default 64)",
        "exclude_hashes": "md5 hashes excluded as non-dermatology images (default: the paper's three)",
        "image_dir": "folder of the <md5hash>.jpg images, absolute or under raw_dir (default: raw_dir, then images/)",
    }
    task = _fitz_task(DEFAULT_IMAGE_SIZE)

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        # The class attribute stays the paper's 64x64; an instance with image_size=128 carries its own task.
        self.task = _fitz_task(int_option(self.options, "image_size", DEFAULT_IMAGE_SIZE, 8))
        excl = self.options.get("exclude_hashes", NON_DERMATOLOGY_HASHES)
        if isinstance(excl, str) or not all(isinstance(h, str) for h in excl):
            raise ConfigError(f"option exclude_hashes must be a list of md5 hashes, got {excl!r}")
        self.exclude_hashes = frozenset(h.strip().lower() for h in excl)
        self.image_dir: str | None = None if self.options.get("image_dir") is None else str(self.options["image_dir"])

    def _csv(self, raw_dir: Path) -> Path:
        detect_variant(
            self.name, raw_dir, self.variants, "--option image_dir=<folder> for the images (the CSV is always fitzpatrick17k.csv)"
        )
        return Path(raw_dir) / CSV_NAME

    def n_raw_rows(self, raw_dir: Path) -> int:
        return count_csv_rows(self._csv(raw_dir))

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        """One row per accepted image: raw_patient_id (= md5hash), split, y_non_neoplastic,
        y_malignant, y_benign, skin_type, disease, image (file name), _source_file, _source_row."""
        raw = read_csv_as_strings(self._csv(raw_dir))
        df = validate_table(raw, self.contract, CSV_NAME, quarantine)

        df = quarantine_unmatched(df, "md5hash", _MD5_RE, "32 hexadecimal digits (the image file name)", quarantine)
        df["md5hash"] = df["md5hash"].str.strip().str.lower()
        df = quarantine_duplicates(df, "md5hash", "image", quarantine)

        flagged = df["md5hash"].isin(self.exclude_hashes)
        quarantine.add_rows(
            df[flagged],
            "cohort",
            "md5hash",
            "md5hash: a non-dermatology image (MRI / X-ray) excluded by the paper (option exclude_hashes)",
        )
        df = df[~flagged].reset_index(drop=True)

        codes = df["three_partition_label"].map({name: k for k, name in enumerate(COARSE_LABELS)})
        return records_frame(
            df,
            self.contract,
            patient=df["md5hash"],
            split=np.where(df["qc"].fillna("").str.strip() == TEST_QC, "test", "train"),
            labels=one_hot(codes.to_numpy(), COARSE_LABELS),
            extra={"image": df["md5hash"] + ".jpg"},
        )

    def decode_inputs(self, records: pd.DataFrame, raw_dir: Path) -> InputChunk:
        """x float32 (n_ok, 3, S, S) in [-1, 1] for the rows of ``records`` (index = positions)."""
        raw_dir = Path(raw_dir)

        def locate(name: str) -> Path:
            # top level first (the paper's downloader); images/ when only there; else the top-level
            # path, which decoding reports as missing
            if self.image_dir is not None:
                folder = Path(self.image_dir)
                return (folder if folder.is_absolute() else raw_dir / folder) / name
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

"""Harvard FairVision (method §1.4): SLO fundus images of three sub-datasets -> one record
(= one patient) per image, 7-class unified eye-disease label.

``raw_dir`` is the FairVision root as downloaded (the OCT ``data_<id>.npz`` volumes may be present;
they are not used), with the summaries in either of two places (detected)::

    raw_dir/
      Glaucoma/ReadMe/data_summary_glaucoma.csv   filename, age, gender, race, ethnicity, language,
      DR/ReadMe/data_summary_dr.csv               maritalstatus, md, <glaucoma|dr|amd>, use
      AMD/ReadMe/data_summary_amd.csv             (each sub-dataset's ReadMe/, as the paper reads them)
      data_summary_{glaucoma,dr,amd}.csv          (or next to the three folders, as the dataset's README shows)
      <Disease>/<Training|Validation|Test>/slo_fundus_<id>.jpg    (folder = the row's ``use``)

``filename`` is ``data_<5-digit id>.npz``; the SLO image of that row is ``slo_fundus_<id>.jpg`` in the
folder named by ``use`` (training -> Training, ...). Option ``subsets`` (default all three of
``glaucoma``, ``dr``, ``amd``) selects the sub-datasets read; every selected summary must exist.

As the paper (``fairvision.ipynb``, ``dataset_factory.py``):

* patient = ``<g|d|a>_<id>`` (first letter of the sub-dataset + the 5-digit id): one image per patient;
* automatic QC on the stored image: ``std <= 3`` or ``mean <= 1`` (8-bit grey levels, over all pixels
  and channels) -> quarantined, stage 'cohort', with the measured values. An image that cannot be read
  at QC time is left to decoding, which quarantines it with the precise reason (stage 'decode');
* label (FAIRVISION_LABELS, one-hot in this order): healthy (glaucoma ``no`` or AMD ``normal``),
  non-vision threatening dr, vision threatening dr, glaucoma (glaucoma ``yes``), early amd,
  intermediate amd, late amd;
* split: ``use == test`` -> test; training and validation -> train.

Subgroups: race, gender, ethnicity, age band and the unified disease label.

Inputs: channel 0 of the JPEG resized to ``image_size`` x ``image_size`` (option, default 64), float32
in [-1, 1], channels-first (1, S, S).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from PIL import Image, ImageStat

from tasks.datasets.base import DatasetAdapter, InputChunk, TaskSpec, register_dataset
from tasks.datasets.contracts import read_csv_as_strings, validate_table
from tasks.datasets.imaging import decode_image_files, image_task
from tasks.datasets.layout import count_csv_rows, int_option, one_hot, quarantine_unmatched, records_frame
from tasks.datasets.quarantine import Quarantine
from tasks.datasets.recipes import QUICK_IMAGE, paper_pool
from tasks.datasets.variants import LayoutVariant, detect_variant
from tasks.errors import ConfigError

DEFAULT_IMAGE_SIZE = 64
FAIRVISION_LABELS: tuple[str, ...] = (
    "healthy",
    "non-vision threatening dr",
    "vision threatening dr",
    "glaucoma",
    "early amd",
    "intermediate amd",
    "late amd",
)
# sub-dataset -> (folder, patient-id prefix, {raw value of its disease column -> unified label})
SUBSETS: dict[str, tuple[str, str, dict[str, str]]] = {
    "glaucoma": ("Glaucoma", "g", {"no": "healthy", "yes": "glaucoma"}),
    "dr": (
        "DR",
        "d",
        {
            "non-vision threatening dr": "non-vision threatening dr",
            "vision threatening dr": "vision threatening dr",
        },
    ),
    "amd": (
        "AMD",
        "a",
        {
            "normal": "healthy",
            "early amd": "early amd",
            "intermediate amd": "intermediate amd",
            "late amd": "late amd",
        },
    ),
}
USE_FOLDER = {"training": "Training", "validation": "Validation", "test": "Test"}
QC_MAX_STD = 3.0  # the paper's thresholds: excluded when std <= 3 or mean <= 1
QC_MAX_MEAN = 1.0
_FILENAME_RE = r"data_(\d{5})\.npz"
_ACCEPTED_MODES = frozenset({"RGB", "L"})


def summary_path(subset: str, flat: bool = False) -> str:
    """Path of a sub-dataset's summary CSV relative to the FairVision root: in ``<Disease>/ReadMe/``, or
    (``flat``) next to the disease folders."""
    return f"data_summary_{subset}.csv" if flat else f"{SUBSETS[subset][0]}/ReadMe/data_summary_{subset}.csv"


def image_stats(path: Path) -> tuple[float, float] | None:
    """(mean, std) of an 8-bit image over all pixels and channels; None if it cannot be measured
    (missing, unreadable or an unexpected mode: decoding reports those)."""
    try:
        with Image.open(path) as img:
            if img.mode not in _ACCEPTED_MODES:
                return None
            img.load()
            stat = ImageStat.Stat(img)
    except Exception:  # any read problem is reported by decode_inputs with its own reason
        return None
    means = np.asarray(stat.mean, dtype=np.float64)
    second = np.asarray(stat.var, dtype=np.float64) + means**2  # per-band E[x^2]
    mean = float(means.mean())
    return mean, float(np.sqrt(max(second.mean() - mean**2, 0.0)))


def _fairvision_task(image_size: int) -> TaskSpec:
    # left/right mirroring does not change glaucoma, DR or AMD status: flip views are fine
    return image_task("multiclass", FAIRVISION_LABELS, (1, image_size, image_size))


@register_dataset
class FairVision(DatasetAdapter):
    name = "fairvision"
    description = "Harvard FairVision SLO fundus: 7-class glaucoma/DR/AMD label, 64x64 channel 0, one patient per image"
    layout = tuple(f"[{SUBSETS[s][0]}/ReadMe/]data_summary_{s}.csv" for s in SUBSETS)
    default_pools: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": paper_pool(
            "wrn_28_2",
            epochs=100,
            learning_rate=1e-4,
            weight_decay=1e-6,
            batch_size=256,
            momentum=0.9,
            ema_decay=0.99,
            warmup_fraction=0.1,
            grad_accum_steps=1,
            augment="weak",
            eval_views=2,
        ),
        "quick": QUICK_IMAGE,
    }
    option_help: ClassVar[dict[str, str] | None] = {
        "image_size": "input side in pixels (default 64)",
        "subsets": "sub-datasets to read (default [glaucoma, dr, amd])",
        "qc_workers": "threads of the automatic image QC",
    }
    task = _fairvision_task(DEFAULT_IMAGE_SIZE)

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self.task = _fairvision_task(int_option(self.options, "image_size", DEFAULT_IMAGE_SIZE, 8))
        subsets = self.options.get("subsets", tuple(SUBSETS))
        if isinstance(subsets, str) or not subsets or any(s not in SUBSETS for s in subsets):
            raise ConfigError(f"option subsets must be a non-empty list drawn from {list(SUBSETS)}, got {subsets!r}")
        self.subsets = [s for s in SUBSETS if s in subsets]  # fixed order: record order does not depend on the option
        self.qc_workers = int_option(self.options, "qc_workers", min(8, os.cpu_count() or 1), 1)
        self.variants = (
            LayoutVariant("summaries in <Disease>/ReadMe/", tuple(summary_path(s) for s in self.subsets), {"flat": ""}),
            LayoutVariant("summaries next to the disease folders", tuple(summary_path(s, flat=True) for s in self.subsets), {"flat": "1"}),
        )

    def _summary(self, raw_dir: Path, subset: str) -> Path:
        variant = detect_variant(self.name, raw_dir, self.variants, "--option subsets=[...] to read only the sub-datasets present")
        return Path(raw_dir) / summary_path(subset, flat=bool(variant.settings["flat"]))

    def n_raw_rows(self, raw_dir: Path) -> int:
        """Sum of the rows of the selected summary CSVs."""
        return sum(count_csv_rows(self._summary(raw_dir, s)) for s in self.subsets)

    def _read_subset(self, raw_dir: Path, subset: str, quarantine: Quarantine) -> pd.DataFrame:
        folder, prefix, label_map = SUBSETS[subset]
        table = f"data_summary_{subset}.csv"
        raw = read_csv_as_strings(self._summary(raw_dir, subset))
        df = validate_table(raw, self.contract, table, quarantine)
        df = quarantine_unmatched(df, "filename", _FILENAME_RE, "data_<5 digits>.npz", quarantine)
        pid = df["filename"].str.strip().str.extract(_FILENAME_RE, expand=False)
        return pd.DataFrame(
            {
                "raw_patient_id": prefix + "_" + pid,
                "use": df["use"].astype(str),
                "disease_label": df[subset].map(label_map).astype(str),
                "image": folder + "/" + df["use"].map(USE_FOLDER) + "/slo_fundus_" + pid + ".jpg",
                **{c: df[c] for c in ("age", "gender", "race", "ethnicity")},
                "_source_file": df["_source_file"],
                "_source_row": df["_source_row"],
            }
        )

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        """One row per accepted image: raw_patient_id, split, y_<7 labels>, race, gender, ethnicity,
        age_band, disease, image (path relative to raw_dir), _source_file, _source_row."""
        raw_dir = Path(raw_dir)
        df = pd.concat([self._read_subset(raw_dir, s, quarantine) for s in self.subsets], ignore_index=True)

        # Automatic QC of the paper: near-black or blank (constant) images carry no fundus.
        with ThreadPoolExecutor(max_workers=self.qc_workers) as pool:  # PIL decodes without the GIL
            stats = list(pool.map(image_stats, (raw_dir / p for p in df["image"])))
        mean = np.array([s[0] if s else np.nan for s in stats])
        std = np.array([s[1] if s else np.nan for s in stats])
        fail = (std <= QC_MAX_STD) | (mean <= QC_MAX_MEAN)  # NaN (not measurable) compares False
        # the image's file name is the patient's number: the reason does not name it
        reasons = [
            f"automatic QC: the image has mean {m:.2f} and std {s:.2f} grey levels "
            f"(excluded when std <= {QC_MAX_STD:g} or mean <= {QC_MAX_MEAN:g})"
            for m, s in zip(mean[fail], std[fail], strict=True)
        ]
        quarantine.add_rows(df[fail], "cohort", "filename", pd.Series(reasons, index=df.index[fail], dtype=object))
        df = df[~fail].reset_index(drop=True)

        codes = df["disease_label"].map({name: k for k, name in enumerate(FAIRVISION_LABELS)})
        return records_frame(
            df,
            self.contract,
            patient=df["raw_patient_id"],
            split=np.where(df["use"] == "test", "test", "train"),
            labels=one_hot(codes.to_numpy(), FAIRVISION_LABELS),
            extra={"image": df["image"].astype(str)},
        )

    def decode_inputs(self, records: pd.DataFrame, raw_dir: Path) -> InputChunk:
        """x float32 (n_ok, 1, S, S) in [-1, 1] (channel 0 of the JPEG) for the rows of ``records``."""
        size = (self.task.input_shape[1], self.task.input_shape[2])
        return decode_image_files(
            records.index,
            [Path(raw_dir) / p for p in records["image"]],
            size,
            mode="L",
            channel0=True,
            accepted_modes=_ACCEPTED_MODES,
        )

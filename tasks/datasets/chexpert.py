"""CheXpert (method §1.1): Stanford chest radiographs -> one record per image.

``raw_dir`` is the folder that holds the unpacked release and the demographics table::

    raw_dir/
      CHEXPERT_DEMO.csv               PATIENT, PRIMARY_RACE, GENDER, AGE_AT_CXR, ETHNICITY
      CheXpert-v1.0/train.csv         Path, Sex, Age, Frontal/Lateral, AP/PA, 14 label columns
      CheXpert-v1.0/valid.csv         optional, same columns: the test split
      CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg    (``Path`` is relative to raw_dir)

The release folder is detected: ``CheXpert-v1.0/`` (full resolution) or ``CheXpert-v1.0-small/`` (the
downsampled download most people get; same CSV columns, ``Path`` starting with ``CheXpert-v1.0-small/``).
Option ``release_dir`` names another folder.

As the paper (``chex.ipynb``):

* patient = the ``patient<digits>`` folder of ``Path``; every image (frontal and lateral) is a record;
* rows with ``Sex == 'Unknown'`` are removed (cohort quarantine);
* labels: uncertain -1 -> 1 (U-Ones), empty -> 0;
* race = ``PRIMARY_RACE`` of CHEXPERT_DEMO.csv collapsed by substring (Black, White, Asian, else
  Other/Unknown; no demographics row -> Other/Unknown); sex from ``Sex``; view = ``AP/PA``, with lateral
  images as ``Lateral``; age band from ``Age``.

Split: train.csv -> train, valid.csv -> test. The paper's test CSV is not in its repository; its
description (labels by consensus of three radiologists, method §1.1) matches the official validation set.
Without valid.csv there is no test split. Where the layout allows a patient to appear in both files,
that patient's valid.csv rows are quarantined: a non-member record must not belong to a member patient.

Inputs: the image resized to ``image_size`` x ``image_size`` (option, default 64 as in the paper; 128
for the ViT runs), grayscale, float32 in [-1, 1], channels-first (1, H, W).

The CXR conventions here (label list, U-Ones, the 14-finding image task) are shared with the
MIMIC-CXR adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from tasks.datasets.base import DatasetAdapter, InputChunk, TaskSpec, register_dataset
from tasks.datasets.contracts import read_csv_as_strings, validate_table
from tasks.datasets.imaging import decode_image_files, image_task
from tasks.datasets.layout import (
    SideTableRejects,
    count_csv_rows,
    int_option,
    label_column,
    quarantine_duplicates,
    quarantine_split_overlap,
    records_frame,
)
from tasks.datasets.quarantine import Quarantine
from tasks.datasets.recipes import QUICK_IMAGE, paper_pool
from tasks.datasets.variants import LayoutVariant, detect_variant

RELEASE_DIR = "CheXpert-v1.0"
SMALL_RELEASE_DIR = "CheXpert-v1.0-small"
TRAIN_CSV = "train.csv"
VALID_CSV = "valid.csv"
DEMO_CSV = "CHEXPERT_DEMO.csv"
DEFAULT_IMAGE_SIZE = 64

# CXR_LABELS of the paper (src/data_utils/constants.py). 'No Finding' must stay first: the CXR score
# transform counts an all-zero label row as label 0 positive (design D12).
CXR_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
_PATIENT_RE = r"(?:^|/)(patient\d+)/study\d+/[^/]+$"


def cxr_task(image_size: int) -> TaskSpec:
    """The paper's 14-finding chest X-ray task on (1, image_size, image_size) grayscale inputs."""
    return image_task("multilabel", CXR_LABELS, (1, image_size, image_size), "softmax_mass_cxr")


def uncertain_ones(labels: pd.DataFrame) -> pd.DataFrame:
    """CheXpert-style label cells (1, 0, -1 uncertain, NaN not mentioned) -> float64 0/1.

    U-Ones: uncertain -> 1; not mentioned -> 0.
    """
    y = labels.astype("float64")
    return y.mask(y == -1.0, 1.0).fillna(0.0)


@register_dataset
class CheXpert(DatasetAdapter):
    name = "chexpert"
    description = "CheXpert chest X-rays: 14 findings (U-Ones), 64x64 grayscale, one record per image"
    layout = (f"{RELEASE_DIR}[-small]/{TRAIN_CSV}", f"{RELEASE_DIR}[-small]/{VALID_CSV}", DEMO_CSV)
    variants = (
        LayoutVariant("full release", (f"{RELEASE_DIR}/{TRAIN_CSV}",), {"release_dir": RELEASE_DIR}),
        LayoutVariant("downsampled release", (f"{SMALL_RELEASE_DIR}/{TRAIN_CSV}",), {"release_dir": SMALL_RELEASE_DIR}),
    )
    default_pools: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": paper_pool(
            "wrn_28_2",
            epochs=60,
            learning_rate=1.0,
            weight_decay=1e-4,
            batch_size=512,
            momentum=0.9,
            ema_decay=0.9995,
            warmup_fraction=0.05,
            grad_accum_steps=2,
            augment="medium",
            eval_views=2,
        ),
        "quick": QUICK_IMAGE,
    }
    option_help: ClassVar[dict[str, str] | None] = {
        "image_size": "input side in pixels (default 64; 128 for ViT runs)",
        "release_dir": "release folder under raw_dir (default: detected, CheXpert-v1.0 or CheXpert-v1.0-small)",
    }
    task = cxr_task(DEFAULT_IMAGE_SIZE)

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        # The class attribute stays the paper's 64x64 (what `medaudit datasets` lists); an instance built
        # with image_size=128 (ViT runs) carries its own task, which the snapshot records.
        self.task = cxr_task(int_option(self.options, "image_size", DEFAULT_IMAGE_SIZE, 8))
        self.release_dir: str | None = None if self.options.get("release_dir") is None else str(self.options["release_dir"])
        self._demo_rejects = SideTableRejects()

    def _image_tables(self, raw_dir: Path) -> list[tuple[Path, str]]:
        """(path, split) of the image CSVs present; train.csv is required, valid.csv optional."""
        release = self.release_dir
        if release is None:
            hint = "--option release_dir=<the folder with train.csv>"
            release = detect_variant(self.name, raw_dir, self.variants, hint).settings["release_dir"]
        base = Path(raw_dir) / release
        tables = [(base / TRAIN_CSV, "train")]
        if (base / VALID_CSV).exists():
            tables.append((base / VALID_CSV, "test"))
        return tables

    def n_raw_rows(self, raw_dir: Path) -> int:
        """Rows of train.csv (+ valid.csv) plus the rows of CHEXPERT_DEMO.csv that failed its contract
        (those are in the quarantine too, so they must be in the count)."""
        raw_dir = Path(raw_dir)
        n = sum(count_csv_rows(path) for path, _ in self._image_tables(raw_dir))
        return n + self._demo_rejects.count([raw_dir / DEMO_CSV], lambda q: self._validate_demographics(raw_dir, q))

    def _validate_demographics(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        """CHEXPERT_DEMO.csv validated -> PATIENT, PRIMARY_RACE (one row per patient)."""
        demo = validate_table(read_csv_as_strings(Path(raw_dir) / DEMO_CSV), self.contract, DEMO_CSV, quarantine)
        return demo[["PATIENT", "PRIMARY_RACE"]]

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        """One row per accepted image: raw_patient_id, split, y_<label> x14, race, sex, view, age_band,
        path (relative to raw_dir), _source_file, _source_row."""
        raw_dir = Path(raw_dir)
        frames = []
        for path, split in self._image_tables(raw_dir):
            table = validate_table(read_csv_as_strings(path), self.contract, path.name, quarantine)
            frames.append(table.assign(split=split))
        df = pd.concat(frames, ignore_index=True)

        patient = df["Path"].str.extract(_PATIENT_RE, expand=False)
        # An absolute path or '..' would read outside raw_dir.
        escapes = df["Path"].str.startswith("/") | df["Path"].str.contains("..", regex=False)
        bad_path = patient.isna() | escapes
        quarantine.add_rows(
            df[bad_path],
            "contract",
            "Path",
            "Path: expected a relative <release>/<split>/patient<digits>/study<digits>/<view>.jpg",
        )
        df = df[~bad_path].assign(patient=patient[~bad_path]).reset_index(drop=True)
        df = quarantine_duplicates(df, "Path", "image", quarantine)

        unknown_sex = df["Sex"] == "Unknown"
        quarantine.add_rows(
            df[unknown_sex],
            "cohort",
            "Sex",
            "Sex: 'Unknown' (the paper removes images without a recorded sex)",
        )
        df = df[~unknown_sex].reset_index(drop=True)
        df = quarantine_split_overlap(df, df["patient"], "Path", quarantine)

        demo = self._demo_rejects.read([raw_dir / DEMO_CSV], quarantine, lambda q: self._validate_demographics(raw_dir, q))
        df = df.merge(demo, how="left", left_on="patient", right_on="PATIENT", validate="many_to_one")
        df["view_position"] = df["AP/PA"].where(df["Frontal/Lateral"] != "Lateral", "Lateral")

        y = uncertain_ones(df[list(CXR_LABELS)])
        return records_frame(
            df,
            self.contract,
            patient=df["patient"],
            split=df["split"],
            labels={label_column(label): y[label] for label in CXR_LABELS},
            extra={"path": df["Path"].astype(str)},
        )

    def decode_inputs(self, records: pd.DataFrame, raw_dir: Path) -> InputChunk:
        """x float32 (n_ok, 1, S, S) in [-1, 1] for the rows of ``records`` (index = positions)."""
        size = (self.task.input_shape[1], self.task.input_shape[2])
        return decode_image_files(records.index, (Path(raw_dir) / p for p in records["path"]), size, mode="L")

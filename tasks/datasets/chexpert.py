"""CheXpert (paper-method.md §1.1): Stanford chest radiographs -> one record per image.

``raw_dir`` is the folder that holds the unpacked release and the demographics table::

    raw_dir/
      CHEXPERT_DEMO.csv               PATIENT, PRIMARY_RACE, GENDER, AGE_AT_CXR, ETHNICITY
      CheXpert-v1.0/train.csv         Path, Sex, Age, Frontal/Lateral, AP/PA, 14 label columns
      CheXpert-v1.0/valid.csv         optional, same columns: the test split
      CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg    (``Path`` is relative to raw_dir)

Option ``release_dir`` (default ``CheXpert-v1.0``) names the release folder, e.g.
``CheXpert-v1.0-small`` for the downsampled download.

As the paper (``chex.ipynb``):

* patient = the ``patient<digits>`` folder of ``Path``; every image (frontal and lateral) is a record;
* rows with ``Sex == 'Unknown'`` are removed (cohort quarantine);
* labels: uncertain -1 -> 1 (U-Ones), empty -> 0;
* race = ``PRIMARY_RACE`` of CHEXPERT_DEMO.csv collapsed by substring (Black, White, Asian, else
  Other/Unknown; no demographics row -> Other/Unknown); sex from ``Sex``; view = ``AP/PA``, with lateral
  images as ``Lateral``; age band from ``Age``.

Split: train.csv -> train, valid.csv -> test. The paper's test CSV is not in its repository; its
description (labels by consensus of three radiologists, §1.1) matches the official validation set.
Without valid.csv there is no test split. Where the layout allows a patient to appear in both files,
that patient's valid.csv rows are quarantined: a non-member record must not belong to a member patient.

Inputs: the image resized to ``image_size`` x ``image_size`` (option, default 64 as in the paper; 128
for the ViT runs), grayscale, float32 in [-1, 1], channels-first (1, H, W).

The CXR conventions here (label list, U-Ones, image task, image decoding, duplicate and split-overlap
checks) are shared with the MIMIC-CXR adapter.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.contracts import read_csv_as_strings, validate_table
from tasks.datasets.base import DatasetAdapter, InputChunk, TaskSpec, register_dataset
from tasks.datasets.imaging import DecodeError, load_image
from tasks.errors import ConfigError, StructuralError
from tasks.quarantine import Quarantine

RELEASE_DIR = "CheXpert-v1.0"
TRAIN_CSV = "train.csv"
VALID_CSV = "valid.csv"
DEMO_CSV = "CHEXPERT_DEMO.csv"
DEFAULT_IMAGE_SIZE = 64

# CXR_LABELS of the paper (src/data_utils/constants.py). 'No Finding' must stay first: the CXR score
# transform counts an all-zero label row as label 0 positive (D12).
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


def label_column(name: str) -> str:
    """Records-frame column of a label: ``y_`` + lower case, non-alphanumerics -> '_' (as the snapshot)."""
    return "y_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def cxr_task(image_size: int) -> TaskSpec:
    """The paper's 14-finding chest X-ray task on (1, image_size, image_size) grayscale inputs."""
    return TaskSpec(
        kind="multilabel",
        label_names=CXR_LABELS,
        input_shape=(1, image_size, image_size),
        modality="image",
        score_transform="softmax_mass_cxr",
        default_architecture="wrn_28_2",
        flip_views_ok=True,  # the findings are not side-specific labels; the paper trains with flips
    )


def image_size_option(options: dict[str, Any]) -> int:
    """The ``image_size`` option (side length in pixels), validated; 64 when not given."""
    raw = options.get("image_size", DEFAULT_IMAGE_SIZE)
    try:
        size = int(raw)
    except (TypeError, ValueError):
        size = 0
    if isinstance(raw, bool) or size < 8 or str(size) != str(raw).strip():
        raise ConfigError(f"option image_size must be a whole number of pixels >= 8 (e.g. 64 or 128), got {raw!r}")
    return size


def uncertain_ones(labels: pd.DataFrame) -> pd.DataFrame:
    """CheXpert-style label cells (1, 0, -1 uncertain, NaN not mentioned) -> float64 0/1.

    U-Ones: uncertain -> 1; not mentioned -> 0.
    """
    y = labels.astype("float64")
    return y.mask(y == -1.0, 1.0).fillna(0.0)


def count_csv_rows(path: Path) -> int:
    """Data rows of a CSV (``.csv`` or ``.csv.gz``): header and blank lines excluded, quoted newlines ok."""
    if not path.exists():
        raise StructuralError(path, "file not found")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as fh:
        return max(sum(1 for row in csv.reader(fh) if row) - 1, 0)


def file_key(path: Path) -> tuple[str, int, int]:
    """Identity of a file's current content for caching: resolved path, mtime, size."""
    if not path.exists():
        raise StructuralError(path, "file not found")
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def quarantine_duplicates(df: pd.DataFrame, key: str, what: str, quarantine: Quarantine) -> pd.DataFrame:
    """Keep the first row of each ``key`` value; later copies go to the quarantine (stage 'dedupe')."""
    dup = df[key].duplicated(keep="first")
    if dup.any():
        first = df.groupby(key, sort=False)["_source_row"].transform("first")
        reasons = f"{key}: the same {what} as line " + first[dup].astype(str) + "; the first row is kept"
        quarantine.add_rows(df[dup], "dedupe", key, reasons)
    return df[~dup].reset_index(drop=True)


def quarantine_split_overlap(df: pd.DataFrame, patient: pd.Series, column: str, quarantine: Quarantine) -> pd.DataFrame:
    """Quarantine test rows of patients who also have train rows (stage 'cohort').

    In a patient-level audit a test record is a non-member; one from a training patient is not.
    ``patient`` is aligned with ``df``, which needs a ``split`` column; ``column`` is the raw column the
    patient id comes from (named in the quarantine).
    """
    overlap = (df["split"] == "test") & patient.isin(patient[df["split"] == "train"])
    quarantine.add_rows(
        df[overlap],
        "cohort",
        column,
        f"{column}: patient also has training records; a test record must come from a patient outside the training split",
    )
    return df[~overlap].reset_index(drop=True)


def decode_images(positions: Iterable[int], paths: Iterable[Path], size: tuple[int, int]) -> InputChunk:
    """Grayscale images -> InputChunk with x float32 (n_ok, 1, H, W) in [-1, 1]; ``size`` is (H, W)."""
    ok: list[int] = []
    images: list[np.ndarray] = []
    failures: dict[int, str] = {}
    for pos, path in zip(positions, paths, strict=True):
        try:
            img = load_image(path, size, mode="L")  # (H, W, 1)
        except DecodeError as exc:
            # Some PIL messages carry the full path, whose folders hold the raw patient id (D4).
            failures[int(pos)] = str(exc).replace(str(path), Path(path).name)
            continue
        ok.append(int(pos))
        images.append(img.transpose(2, 0, 1))
    x = np.stack(images).astype(np.float32, copy=False) if images else np.empty((0, 1, *size), dtype=np.float32)
    return InputChunk(ok_positions=np.asarray(ok, dtype=np.int64), x=x, failures=failures)


@register_dataset
class CheXpert(DatasetAdapter):
    name = "chexpert"
    description = "CheXpert chest X-rays: 14 findings (U-Ones), 64x64 grayscale, one record per image"
    layout = (f"{RELEASE_DIR}/{TRAIN_CSV}", f"{RELEASE_DIR}/{VALID_CSV}", DEMO_CSV)
    task = cxr_task(DEFAULT_IMAGE_SIZE)

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        # The class attribute stays the paper's 64x64 (what `medaudit datasets` lists); an instance built
        # with image_size=128 (ViT runs) carries its own task, which the snapshot records.
        self.task = cxr_task(image_size_option(self.options))
        self.release_dir = str(self.options.get("release_dir", RELEASE_DIR))
        self._demo_excluded: dict[tuple[str, int, int], int] = {}

    def _image_tables(self, raw_dir: Path) -> list[tuple[Path, str]]:
        """(path, split) of the image CSVs present; train.csv is required, valid.csv optional."""
        base = Path(raw_dir) / self.release_dir
        tables = [(base / TRAIN_CSV, "train")]
        if (base / VALID_CSV).exists():
            tables.append((base / VALID_CSV, "test"))
        return tables

    def n_raw_rows(self, raw_dir: Path) -> int:
        """Rows of train.csv (+ valid.csv) plus the rows of CHEXPERT_DEMO.csv that failed its contract
        (those are in the quarantine too, so they must be in the count)."""
        raw_dir = Path(raw_dir)
        n = sum(count_csv_rows(path) for path, _ in self._image_tables(raw_dir))
        demo = raw_dir / DEMO_CSV
        if file_key(demo) not in self._demo_excluded:
            self._read_demographics(raw_dir, Quarantine())
        return n + self._demo_excluded[file_key(demo)]

    def _read_demographics(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        """CHEXPERT_DEMO.csv validated -> PATIENT, PRIMARY_RACE (one row per patient)."""
        path = Path(raw_dir) / DEMO_CSV
        local = Quarantine()
        demo = validate_table(read_csv_as_strings(path), self.contract, DEMO_CSV, local)
        quarantine.entries.extend(local.entries)
        self._demo_excluded[file_key(path)] = len(local)
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

        demo = self._read_demographics(raw_dir, quarantine)
        df = df.merge(demo, how="left", left_on="patient", right_on="PATIENT", validate="many_to_one")
        df["view_position"] = df["AP/PA"].where(df["Frontal/Lateral"] != "Lateral", "Lateral")

        y = uncertain_ones(df[list(CXR_LABELS)])
        records = pd.DataFrame({"raw_patient_id": df["patient"].astype(str), "split": df["split"]})
        for label in CXR_LABELS:
            records[label_column(label)] = y[label].to_numpy()
        for attr, sg in self.contract.subgroups.items():
            records[attr] = self.contract.map_subgroup(attr, df[sg.column])
        records["path"] = df["Path"].astype(str)
        records["_source_file"] = df["_source_file"]
        records["_source_row"] = df["_source_row"]
        return records

    def decode_inputs(self, records: pd.DataFrame, raw_dir: Path) -> InputChunk:
        """x float32 (n_ok, 1, S, S) in [-1, 1] for the rows of ``records`` (index = positions)."""
        size = (self.task.input_shape[1], self.task.input_shape[2])
        return decode_images(records.index, (Path(raw_dir) / p for p in records["path"]), size)

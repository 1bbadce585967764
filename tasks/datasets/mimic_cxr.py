"""MIMIC-CXR-JPG 2.0.0 (method §1.2): Beth Israel chest radiographs -> one record per image.

``raw_dir`` is the MIMIC-CXR-JPG root with MIMIC-IV's admissions and patients tables copied next to its
tables (as the paper did); every table may be the ``.csv.gz`` PhysioNet ships::

    raw_dir/
      mimic-cxr-2.0.0-metadata.csv     dicom_id, subject_id, study_id, ViewPosition, ...  (primary table)
      mimic-cxr-2.0.0-negbio.csv       subject_id, study_id, 14 labels (option labeler='negbio', default)
      mimic-cxr-2.0.0-chexpert.csv     the same from the CheXpert labeler (labeler='chexpert')
      mimic-cxr-2.0.0-split.csv        dicom_id, study_id, subject_id, split (train/validate/test)
      admissions.csv, patients.csv     MIMIC-IV hosp: subject_id, race, ... / subject_id, gender, anchor_age
      files/p10/p10000032/s50414267/<dicom_id>.jpg

As the paper (``mimic.ipynb``): metadata left-joined with the labels on (subject_id, study_id), labels
U-Ones (-1 -> 1) and empty -> 0 (a study without a label row therefore has all-zero labels, which the
CXR score transform counts as No Finding, design D12); race from admissions, OTHER/UNKNOWN for subjects with
more than one distinct recorded race, collapsed by substring; sex from patients.gender; view =
ViewPosition (AP, PA, LATERAL, LL, else Other/Unknown); age band from patients.anchor_age.

Deviation (split): the paper trains on all images and uses CheXpert's test images as non-members.
Non-members from another hospital differ in distribution from the members, so an attack partly
detects the source rather than membership (method pitfall 26). Here the official split is
used: 'test' rows -> test (non-members from the same source), 'train' and 'validate' rows -> train.
Images without a split row are quarantined (cohort); so are test images of subjects who also have
training images (the official split is by subject, so this only fires on an inconsistent copy).

Inputs: as CheXpert (``image_size`` option, default 64): float32 (1, S, S) in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from tasks.datasets.base import DatasetAdapter, InputChunk, register_dataset
from tasks.datasets.chexpert import CXR_LABELS, DEFAULT_IMAGE_SIZE, cxr_task, uncertain_ones
from tasks.datasets.contracts import read_csv_as_strings, validate_table
from tasks.datasets.imaging import decode_image_files
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
from tasks.errors import ConfigError, StructuralError

METADATA = "mimic-cxr-2.0.0-metadata.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"
LABELS = {"negbio": "mimic-cxr-2.0.0-negbio.csv", "chexpert": "mimic-cxr-2.0.0-chexpert.csv"}
ADMISSIONS = "admissions.csv"
PATIENTS = "patients.csv"
# A subject whose admissions record several races is not assigned any one of them (paper).
CONFLICTING_RACE = "OTHER/UNKNOWN"
SPLIT_MAP = {"train": "train", "validate": "train", "test": "test"}


def table_path(raw_dir: Path, name: str) -> Path:
    """``raw_dir/name``, or ``name.gz`` as PhysioNet ships it; StructuralError when neither exists."""
    plain = Path(raw_dir) / name
    if plain.exists():
        return plain
    gz = plain.with_name(name + ".gz")
    if gz.exists():
        return gz
    raise StructuralError(plain, "file not found", expected=f"{name} or {name}.gz in the MIMIC-CXR-JPG root")


def image_path(subject_id: int, study_id: int, dicom_id: str) -> str:
    """files/p<first two digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg (relative to raw_dir)."""
    sid = str(subject_id)
    return f"files/p{sid[:2]}/p{sid}/s{study_id}/{dicom_id}.jpg"


def subject_race(admissions: pd.DataFrame) -> pd.DataFrame:
    """admissions (subject_id, race) -> one row per subject with a recorded race: subject_id, race.

    Several distinct race values -> OTHER/UNKNOWN (as the paper); empty race cells are ignored.
    """
    adm = admissions.loc[admissions["race"].notna(), ["subject_id", "race"]]
    by_subject = adm.groupby("subject_id", sort=True)["race"]
    race = by_subject.first().where(by_subject.nunique() <= 1, CONFLICTING_RACE)
    return race.rename("race").reset_index()


@register_dataset
class MimicCXR(DatasetAdapter):
    name = "mimic-cxr"
    description = "MIMIC-CXR-JPG chest X-rays: 14 findings (U-Ones), 64x64 grayscale, one record per image"
    layout = (METADATA, LABELS["negbio"], SPLIT, ADMISSIONS, PATIENTS, "files/")
    default_pools: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": paper_pool(
            "wrn_28_2",
            epochs=60,
            learning_rate=0.25,
            weight_decay=1e-3,
            batch_size=512,
            momentum=0.99,
            ema_decay=0.95,
            warmup_fraction=0.2,
            grad_accum_steps=2,
            augment="medium",
            eval_views=2,
        ),
        "quick": QUICK_IMAGE,
    }
    option_help: ClassVar[dict[str, str] | None] = {
        "image_size": "input side in pixels (default 64)",
        "labeler": "label table: negbio (default, the paper) or chexpert",
    }
    task = cxr_task(DEFAULT_IMAGE_SIZE)

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self.task = cxr_task(int_option(self.options, "image_size", DEFAULT_IMAGE_SIZE, 8))  # see CheXpert.__init__
        labeler = str(self.options.get("labeler", "negbio"))
        if labeler not in LABELS:
            raise ConfigError(f"option labeler must be one of {sorted(LABELS)}, got {labeler!r}")
        self.labels_table = LABELS[labeler]
        self._aux_rejects = SideTableRejects()

    def _read(self, raw_dir: Path, table: str, quarantine: Quarantine) -> pd.DataFrame:
        """One table validated against its contract; only the contract's columns are read."""
        wanted = set(self.contract.tables[table].columns)
        raw = read_csv_as_strings(table_path(raw_dir, table), usecols=lambda c: c in wanted)
        return validate_table(raw, self.contract, table, quarantine)

    def _aux_tables(self) -> tuple[str, ...]:
        return (SPLIT, self.labels_table, PATIENTS, ADMISSIONS)

    def _aux_paths(self, raw_dir: Path) -> list[Path]:
        return [table_path(raw_dir, t) for t in self._aux_tables()]

    def _validate_aux(self, raw_dir: Path, quarantine: Quarantine) -> dict[str, pd.DataFrame]:
        """The auxiliary tables validated, by name."""
        return {t: self._read(raw_dir, t, quarantine) for t in self._aux_tables()}

    def n_raw_rows(self, raw_dir: Path) -> int:
        """Rows of the metadata table plus the auxiliary-table rows that failed their contract (those
        are in the quarantine too)."""
        rejected = self._aux_rejects.count(self._aux_paths(raw_dir), lambda q: self._validate_aux(raw_dir, q))
        return count_csv_rows(table_path(raw_dir, METADATA)) + rejected

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        """One row per accepted image: raw_patient_id (subject_id), split, y_<label> x14, race, sex,
        view, age_band, official_split, path (relative to raw_dir), _source_file, _source_row."""
        raw_dir = Path(raw_dir)
        df = self._read(raw_dir, METADATA, quarantine)
        # dicom_id becomes a file name: anything but hex groups and dashes could point outside raw_dir.
        bad_id = ~df["dicom_id"].str.fullmatch(r"[0-9A-Za-z-]+").astype(bool)
        quarantine.add_rows(df[bad_id], "contract", "dicom_id", "dicom_id: expected letters, digits and dashes only")
        df = quarantine_duplicates(df[~bad_id].reset_index(drop=True), "dicom_id", "image", quarantine)
        aux = self._aux_rejects.read(self._aux_paths(raw_dir), quarantine, lambda q: self._validate_aux(raw_dir, q))

        split = aux[SPLIT][["dicom_id", "split"]].rename(columns={"split": "official_split"})
        df = df.merge(split, how="left", on="dicom_id", validate="many_to_one")
        no_split = df["official_split"].isna()
        quarantine.add_rows(df[no_split], "cohort", "dicom_id", f"dicom_id: image not listed in {SPLIT}")
        df = df[~no_split].reset_index(drop=True)
        df["split"] = df["official_split"].map(SPLIT_MAP)
        df = quarantine_split_overlap(df, df["subject_id"], "subject_id", quarantine)

        labels = aux[self.labels_table][["subject_id", "study_id", *CXR_LABELS]]
        df = df.merge(labels, how="left", on=["subject_id", "study_id"], validate="many_to_one")
        patients = aux[PATIENTS][["subject_id", "gender", "anchor_age"]]
        df = df.merge(patients, how="left", on="subject_id", validate="many_to_one")
        df = df.merge(subject_race(aux[ADMISSIONS]), how="left", on="subject_id", validate="many_to_one")

        y = uncertain_ones(df[list(CXR_LABELS)])
        return records_frame(
            df,
            self.contract,
            patient=df["subject_id"].astype("int64").astype(str),
            split=df["split"],
            labels={label_column(label): y[label] for label in CXR_LABELS},
            extra={
                "official_split": df["official_split"].astype(str),
                "path": [image_path(s, st, d) for s, st, d in zip(df["subject_id"], df["study_id"], df["dicom_id"], strict=True)],
            },
        )

    def decode_inputs(self, records: pd.DataFrame, raw_dir: Path) -> InputChunk:
        """x float32 (n_ok, 1, S, S) in [-1, 1] for the rows of ``records`` (index = positions)."""
        size = (self.task.input_shape[1], self.task.input_shape[2])
        return decode_image_files(records.index, (Path(raw_dir) / p for p in records["path"]), size, mode="L")

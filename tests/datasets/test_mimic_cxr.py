"""MIMIC-CXR-JPG adapter on the synthetic release: the paper's definitions (method §1.2) and design D2.

One module fixture writes the cohort, adds a few awkward rows by editing the files (a duplicated image
row, an image of a training subject marked 'test' in the split table, a subject listed twice in
patients.csv) and builds a snapshot once.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tasks.datasets.chexpert import CXR_LABELS
from tasks.datasets.layout import count_csv_rows, label_column
from tasks.datasets.mimic_cxr import LABELS, MimicCXR, table_path
from tasks.datasets.quarantine import Quarantine
from tasks.errors import ConfigError, StructuralError
from tasks.ingest.snapshot import build_snapshot
from tasks.synthetic import get_synthetic_writer
from tasks.synthetic.mimic_cxr import TRUTH_FILE

N_PATIENTS = 60
META = "mimic-cxr-2.0.0-metadata.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"
NEGBIO = LABELS["negbio"]


class _Capturing(MimicCXR):
    """The adapter, keeping the frame read_records returned (the snapshot drops raw ids and paths)."""

    captured: pd.DataFrame

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        records = super().read_records(raw_dir, quarantine)
        self.captured = records.copy()
        return records


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    raw = get_synthetic_writer("mimic-cxr")(tmp_path_factory.mktemp("raw"), N_PATIENTS, seed=3)
    truth = pd.read_csv(raw / TRUTH_FILE, keep_default_na=False)
    meta, split, patients = _read(raw / META), _read(raw / SPLIT), _read(raw / "patients.csv")
    ordinary = meta[~meta.index.isin(truth["source_row"] - 2)]
    train_subjects = set(split.loc[split["split"] == "train", "subject_id"])
    by_subject = ordinary[ordinary["subject_id"].isin(train_subjects)].groupby("subject_id")
    several = [s for s, g in by_subject if len(g) >= 2]
    leak_subject, twice_subject = several[0], several[1]
    # One image of a training subject marked 'test' (cohort), one image row listed twice (dedupe) ...
    leak = int(ordinary.index[ordinary["subject_id"] == leak_subject][0])
    split.loc[split["dicom_id"] == meta.at[leak, "dicom_id"], "split"] = "test"
    copied = int(ordinary.index[ordinary["subject_id"] == twice_subject][0])
    meta = pd.concat([meta, meta.iloc[[copied]]], ignore_index=True)
    # ... and a subject listed twice in patients.csv: both copies quarantined, sex and age unknown.
    patients = pd.concat([patients, patients[patients["subject_id"] == twice_subject]], ignore_index=True)
    meta.to_csv(raw / META, index=False)
    split.to_csv(raw / SPLIT, index=False)
    patients.to_csv(raw / "patients.csv", index=False)

    adapter = _Capturing()
    snap = build_snapshot(adapter, raw, tmp_path_factory.mktemp("results"), b"0123456789abcdef")
    expected = {(META, int(r)): s for r, s in truth.loc[truth["stage"] != "", ["source_row", "stage"]].itertuples(index=False)}
    expected |= {(META, leak + 2): "cohort", (META, len(meta) + 1): "dedupe"}
    expected |= {("patients.csv", int(i) + 2): "contract" for i in np.flatnonzero(patients["subject_id"] == twice_subject)}
    rows = meta.loc[adapter.captured["_source_row"].to_numpy() - 2].reset_index(drop=True)
    return SimpleNamespace(
        raw=raw,
        truth=truth,
        meta=meta,
        split=split,
        patients=patients,
        adapter=adapter,
        records=adapter.captured,
        rows=rows,
        snap=snap,
        expected=expected,
        leak=leak,
        twice_subject=twice_subject,
    )


def _plant(built: SimpleNamespace) -> pd.Series:
    """The writer's plant of each record ('' for an ordinary one)."""
    return built.records["_source_row"].map(dict(zip(built.truth["source_row"], built.truth["plant"], strict=True))).fillna("")


def test_counts_after_each_filter(built: SimpleNamespace) -> None:
    stages = built.snap.quarantine()["stage"].value_counts().to_dict()
    assert built.snap.n_raw == len(built.meta) + 2  # + the two ambiguous patients.csv rows
    assert stages == {"contract": 3, "cohort": 2, "dedupe": 1, "decode": 3}
    assert len(built.records) == len(built.meta) - 1 - 2 - 1  # damaged, not in split / leaked, duplicate
    assert built.snap.n_accepted == len(built.records) - 3
    assert built.snap.n_raw == built.snap.n_accepted + built.snap.n_quarantined


def test_every_excluded_row_is_quarantined_with_its_reason(built: SimpleNamespace) -> None:
    q = built.snap.quarantine()
    assert {(f, int(r)): s for f, r, s in q[["source_file", "source_row", "stage"]].itertuples(index=False)} == built.expected
    reason = q.set_index(["source_file", "source_row"])["reason"]
    row = dict(zip(built.truth["plant"], built.truth["source_row"], strict=False))
    assert reason[(META, row["damaged_row"])].startswith("study_id: expected an integer, found an identifier (value withheld)")
    assert reason[(META, row["not_in_split"])] == f"dicom_id: image not listed in {SPLIT}"
    assert "listed but missing" in reason[(META, row["missing_image"])]
    assert "truncated" in reason[(META, row["truncated_jpeg"])]
    assert "cannot identify image file" in reason[(META, row["text_as_jpeg"])]
    assert reason[(META, built.leak + 2)].startswith("subject_id: patient also has training records")
    assert reason[(META, len(built.meta) + 1)].startswith("dicom_id: the same image as line ")
    # design D4: image paths hold the subject id; decode reasons name the file only.
    decode = q.loc[q["stage"] == "decode", "reason"]
    assert not any(s in r for r in decode for s in set(built.meta["subject_id"]))


def test_labels_are_u_ones_and_unlabelled_studies_are_zero(built: SimpleNamespace) -> None:
    labels = _read(built.raw / NEGBIO).set_index("study_id")
    cells = np.array([[labels.at[st, n] if st in labels.index else "" for n in CXR_LABELS] for st in built.rows["study_id"]])
    assert (cells == "-1.0").any() and (cells == "").any()
    y = built.records[[label_column(n) for n in CXR_LABELS]].to_numpy()
    np.testing.assert_array_equal(y, np.where(np.isin(cells, ["1.0", "-1.0"]), 1.0, 0.0))
    unlabelled = (_plant(built) == "unlabelled_study").to_numpy()
    assert unlabelled.sum() >= 1 and (y[unlabelled] == 0).all()
    assert MimicCXR({"labeler": "chexpert"}).labels_table == "mimic-cxr-2.0.0-chexpert.csv"
    with pytest.raises(ConfigError, match="labeler"):
        MimicCXR({"labeler": "radiologist"})


def test_split_and_patient_ids(built: SimpleNamespace) -> None:
    rec, rows = built.records, built.rows
    official = rows["dicom_id"].map(built.split.set_index("dicom_id")["split"])
    assert (rec["official_split"] == official).all()
    assert (rec["split"] == official.map({"train": "train", "validate": "train", "test": "test"})).all()
    assert set(rec["split"]) == {"train", "test"}
    assert set(rec.loc[rec["split"] == "test", "raw_patient_id"]).isdisjoint(rec.loc[rec["split"] == "train", "raw_patient_id"])
    assert (rec["raw_patient_id"] == rows["subject_id"]).all()
    assert rec.groupby("raw_patient_id").size().max() >= 3
    sid = rows["subject_id"]
    assert (rec["path"] == "files/p" + sid.str[:2] + "/p" + sid + "/s" + rows["study_id"] + "/" + rows["dicom_id"] + ".jpg").all()


def test_subgroups(built: SimpleNamespace) -> None:
    rec, rows, plant = built.records, built.rows, _plant(built)
    adm = _read(built.raw / "admissions.csv")
    adm = adm[adm["race"] != ""]
    distinct = adm.groupby("subject_id")["race"].agg(lambda r: set(r))

    def race_of(subject: str) -> str:
        races = distinct.get(subject, set())
        if len(races) != 1:
            return "Other/Unknown"
        race = next(iter(races))
        return next(
            (g for n, g in (("BLACK", "Black"), ("WHITE", "White"), ("ASIAN", "Asian")) if n in race),
            "Other/Unknown",
        )

    assert (rec["race"] == rows["subject_id"].map(race_of)).all()
    assert (rec.loc[plant.isin(["multi_race", "no_admissions"]), "race"] == "Other/Unknown").all()
    assert (plant == "multi_race").any() and (plant == "no_admissions").any()

    gender = built.patients.drop_duplicates("subject_id", keep=False).set_index("subject_id")["gender"]
    assert (rec["sex"] == rows["subject_id"].map(gender).map({"F": "Female", "M": "Male"}).fillna("Unknown")).all()
    unknown = plant.eq("no_patient_row") | rec["raw_patient_id"].eq(built.twice_subject)
    assert (rec.loc[unknown, ["sex", "age_band"]] == "Unknown").all().all() and unknown.sum() >= 2
    assert ((rec["sex"] == "Unknown") == unknown).all()

    analysed = rows["ViewPosition"].isin(["AP", "PA", "LATERAL", "LL"])
    assert (rec.loc[analysed, "view"] == rows.loc[analysed, "ViewPosition"]).all()
    assert (rec.loc[~analysed, "view"] == "Other/Unknown").all() and (~analysed).any()
    assert set(rec["age_band"]) <= {"0-17", "18-39", "40-64", "65-79", "80+", "Unknown"}


def test_decoded_inputs_and_label_signal(built: SimpleNamespace) -> None:
    x = built.snap.inputs()
    assert x.shape == (built.snap.n_accepted, 1, 64, 64) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    failed = {r for (f, r), s in built.expected.items() if f == META and s == "decode"}
    ok = built.records[~built.records["_source_row"].isin(failed)]
    frontal = ~ok["view"].isin(["LATERAL", "LL"]).to_numpy()
    effusion = ok["y_pleural_effusion"].to_numpy() == 1
    bases = (x[:, 0, 42:47, 15:23].mean(axis=(1, 2)) + x[:, 0, 42:47, 41:49].mean(axis=(1, 2))) / 2
    assert bases[frontal & effusion].mean() > bases[frontal & ~effusion].mean() + 0.05
    chunk = built.records.iloc[20:50]
    out = MimicCXR({"image_size": 32}).decode_inputs(chunk, built.raw)
    assert set(out.ok_positions) | set(out.failures) == set(chunk.index)
    assert out.x.shape == (len(out.ok_positions), 1, 32, 32)


def test_missing_column_or_file_is_structural(built: SimpleNamespace, tmp_path: Path) -> None:
    for name in (META, SPLIT, NEGBIO, "patients.csv"):
        shutil.copy(built.raw / name, tmp_path / name)
    _read(built.raw / "admissions.csv").drop(columns=["race"]).to_csv(tmp_path / "admissions.csv", index=False)
    with pytest.raises(StructuralError) as err:
        MimicCXR().n_raw_rows(tmp_path)
    assert err.value.file == "admissions.csv" and err.value.column == "race"
    (tmp_path / "patients.csv").unlink()
    with pytest.raises(StructuralError, match=r"patients.csv: file not found \(expected patients.csv or patients.csv.gz"):
        MimicCXR().read_records(tmp_path, Quarantine())


def test_gzipped_tables_are_found(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "admissions.csv.gz", "wt") as fh:
        fh.write('subject_id,hadm_id,race\n1,2,"WHITE, with a comma"\n3,4,ASIAN\n\n')
    path = table_path(tmp_path, "admissions.csv")
    assert path.name == "admissions.csv.gz" and count_csv_rows(path) == 2

"""Ingest of the MIMIC-IV-ED layout: bad input is named or quarantined, nothing is lost, versions are content hashes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tasks.datasets import get_dataset
from tasks.errors import StructuralError
from tasks.ingest.pseudonym import load_or_create_secret
from tasks.ingest.snapshot import build_snapshot
from tasks.synthetic.mimic_iv_ed import generate_ed_cohort


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    df, _ = generate_ed_cohort(120, seed=3)
    return df


def _write(tmp: Path, df: pd.DataFrame) -> Path:
    raw = tmp / "raw"
    raw.mkdir(exist_ok=True)
    df.to_csv(raw / "master_dataset.csv", index=False)
    return raw


def _ingest(raw: Path, results: Path):
    return build_snapshot(get_dataset("mimic-iv-ed"), raw, results, load_or_create_secret())


def test_missing_required_column_names_file_and_column(tmp_path: Path, cohort: pd.DataFrame) -> None:
    raw = _write(tmp_path, cohort.drop(columns=["triage_heartrate"]))
    with pytest.raises(StructuralError) as err:
        _ingest(raw, tmp_path / "res")
    msg = str(err.value)
    assert "master_dataset.csv" in msg and "triage_heartrate" in msg and "missing" in msg


def test_bad_rows_are_quarantined_with_reasons_and_counts_reconcile(tmp_path: Path, cohort: pd.DataFrame) -> None:
    df = cohort.astype({"triage_heartrate": "object", "age": "object"}).copy()
    adults = df.index[df["age"].astype(float) >= 18]
    bad_vital, bad_age, dup_a, dup_b = adults[:4]
    df.loc[bad_vital, "triage_heartrate"] = "tachy"
    df.loc[bad_age, "age"] = 250
    df.loc[dup_b, "stay_id"] = df.loc[dup_a, "stay_id"]
    raw = _write(tmp_path, df)
    snap = _ingest(raw, tmp_path / "res")
    q = snap.quarantine().set_index("source_row")
    line = lambda i: int(i) + 2  # noqa: E731  (CSV line of frame row i; the header is line 1)

    assert q.loc[line(bad_vital), "reason"] == "triage_heartrate: expected a number, found 'tachy'"
    assert q.loc[line(bad_age), "reason"] == "age: expected a value in [0.0, 120.0], found '250'"
    for dup in (dup_a, dup_b):  # both copies: which one is right is unknowable
        assert q.loc[line(dup), "reason"] == "stay_id: duplicate value (the id must be unique), found an identifier (value withheld)"
    minors = df.index[df["age"].astype(float) < 18]
    assert len(minors) > 0
    for i in minors:
        assert q.loc[line(i), "stage"] == "cohort"
    assert set(q["source_file"]) == {"master_dataset.csv"}
    assert snap.n_raw == len(df) == snap.n_accepted + snap.n_quarantined
    # the benchmark also drops adult stays without a triage acuity
    no_acuity = df.index[(df["age"].astype(float) >= 18) & df["triage_acuity"].isna() & ~df.index.isin([bad_vital, bad_age, dup_a, dup_b])]
    for i in no_acuity:
        assert q.loc[line(i), "column"] == "triage_acuity" and q.loc[line(i), "stage"] == "cohort"
    assert snap.n_quarantined == 4 + len(minors) + len(no_acuity)


def test_snapshot_is_pseudonymous_and_patient_split(tmp_path: Path, cohort: pd.DataFrame) -> None:
    snap = _ingest(_write(tmp_path, cohort), tmp_path / "res")
    rec = snap.records
    assert "raw_patient_id" not in rec.columns and "subject_id" not in rec.columns
    raw_ids = set(cohort["subject_id"].astype(str))
    assert not raw_ids & set(rec["patient_key"])
    assert not any(r in (snap.path / "records.parquet").read_bytes().decode("latin-1") for r in list(raw_ids)[:50])
    # a patient's stays are all in one split (patient-level 80/20)
    assert rec.groupby("patient_key")["split"].nunique().max() == 1
    assert 0.1 < (rec["split"] == "test").mean() < 0.35
    x = snap.inputs()
    assert x.shape == (len(rec), 64) and x.dtype == "float32"
    assert set(rec["race"]) <= {"Asian", "Black", "White", "Other/Unknown"}


def test_version_changes_when_and_only_when_content_changes(tmp_path: Path, cohort: pd.DataFrame) -> None:
    raw = _write(tmp_path, cohort)
    v1 = _ingest(raw, tmp_path / "res").version
    assert _ingest(raw, tmp_path / "res").version == v1  # same content, same version (reused)
    changed = cohort.copy()
    changed.loc[changed.index[changed["age"] >= 18][0], "triage_sbp"] = 171.0
    v2 = _ingest(_write(tmp_path, changed), tmp_path / "res").version
    assert v2 != v1


def test_wrong_encoding_is_a_structural_error_naming_the_file(tmp_path: Path, cohort: pd.DataFrame) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    df = cohort.copy()
    df.loc[df.index[0], "race"] = "WHITE - ÉIRE"
    df.to_csv(raw / "master_dataset.csv", index=False, encoding="latin-1")
    with pytest.raises(StructuralError, match=r"master_dataset.csv: not valid UTF-8 text near byte \d+"):
        _ingest(raw, tmp_path / "res")


def test_wrong_delimiter_is_reported_as_missing_columns(tmp_path: Path, cohort: pd.DataFrame) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    cohort.to_csv(raw / "master_dataset.csv", index=False, sep=";")
    with pytest.raises(StructuralError, match=r"master_dataset.csv, column 'subject_id': required column 'subject_id' is missing"):
        _ingest(raw, tmp_path / "res")


def test_missing_file_is_a_structural_error(tmp_path: Path) -> None:
    with pytest.raises(StructuralError, match=r"master_dataset\.csv: file not found"):
        _ingest(tmp_path, tmp_path / "res")

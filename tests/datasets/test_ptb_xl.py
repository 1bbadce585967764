"""PTB-XL adapter on the synthetic release: the paper's definitions (method §1.6) and design D2.

One module fixture writes the cohort, adds a few awkward rows by editing the files (a duplicated ECG
row, a fold-10 ECG of a patient with training ECGs, a malformed statement) and builds a snapshot once.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import wfdb

from tasks.datasets.ptb_xl import LEADS, PTBXL, SUPERCLASSES, read_ecg
from tasks.datasets.quarantine import Quarantine
from tasks.errors import StructuralError
from tasks.ingest.snapshot import build_snapshot, label_columns
from tasks.synthetic import get_synthetic_writer
from tasks.synthetic.ptb_xl import TRUTH_FILE, ecg_waveform

N_PATIENTS = 60
DB = "ptbxl_database.csv"
STATEMENTS = "scp_statements.csv"


class _Capturing(PTBXL):
    """The adapter, keeping the frame read_records returned (the snapshot drops raw ids)."""

    captured: pd.DataFrame

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        records = super().read_records(raw_dir, quarantine)
        self.captured = records.copy()
        return records


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    raw = get_synthetic_writer("ptb-xl")(tmp_path_factory.mktemp("raw"), N_PATIENTS, seed=5)
    truth = pd.read_csv(raw / TRUTH_FILE, keep_default_na=False)
    db = pd.read_csv(raw / DB, dtype=str, keep_default_na=False)
    planted = set(truth["source_row"] - 2)
    ordinary = db[~db.index.isin(planted) & (db["strat_fold"] != "10")]
    # A training patient with two ordinary ECGs: move one to the test fold (cohort quarantine) ...
    twice = ordinary.groupby("patient_id").filter(lambda g: len(g) >= 2)
    moved = int(twice.index[0])
    db.loc[moved, "strat_fold"] = "10"
    # ... and list another ordinary ECG twice (dedupe).
    copied = int(ordinary.index[ordinary.index != moved][0])
    db = pd.concat([db, db.iloc[[copied]]], ignore_index=True)
    db.to_csv(raw / DB, index=False)
    # A statement with an unknown superclass (contract quarantine in scp_statements.csv).
    n_statements = len(pd.read_csv(raw / STATEMENTS))
    with open(raw / STATEMENTS, "a") as fh:
        fh.write("FOO,made-up statement,1.0,,,XYZ,,,,,,,\n")

    adapter = _Capturing()
    snap = build_snapshot(adapter, raw, tmp_path_factory.mktemp("results"), b"0123456789abcdef")
    expected = {(DB, int(r)): s for r, s in truth.loc[truth["stage"] != "", ["source_row", "stage"]].itertuples(index=False)}
    expected |= {
        (DB, moved + 2): "cohort",
        (DB, len(db) + 1): "dedupe",
        (STATEMENTS, n_statements + 2): "contract",
    }
    return SimpleNamespace(
        raw=raw,
        truth=truth,
        db=db,
        adapter=adapter,
        records=adapter.captured,
        snap=snap,
        expected=expected,
        moved=moved,
    )


def _raw_rows(built: SimpleNamespace) -> pd.DataFrame:
    """The raw database rows behind the records, in record order."""
    return built.db.loc[built.records["_source_row"].to_numpy() - 2].reset_index(drop=True)


def test_counts_after_each_filter(built: SimpleNamespace) -> None:
    stages = built.snap.quarantine()["stage"].value_counts().to_dict()
    assert built.snap.n_raw == len(built.db) + 1  # + the malformed statement row
    assert stages == {"contract": 2, "cohort": 1, "dedupe": 1, "decode": 4}
    assert len(built.records) == len(built.db) - 1 - 1 - 1  # bad scp_codes, moved to fold 10, duplicate
    assert built.snap.n_accepted == len(built.records) - 4
    assert built.snap.n_raw == built.snap.n_accepted + built.snap.n_quarantined


def test_every_excluded_row_is_quarantined_with_its_reason(built: SimpleNamespace) -> None:
    q = built.snap.quarantine()
    assert {(f, int(r)): s for f, r, s in q[["source_file", "source_row", "stage"]].itertuples(index=False)} == built.expected
    reason = q.set_index(["source_file", "source_row"])["reason"]
    plant_row = dict(zip(built.truth["plant"], built.truth["source_row"], strict=False))
    assert reason[(DB, plant_row["bad_scp_codes"])].startswith("scp_codes: expected a dict literal")
    assert reason[(DB, plant_row["missing_record"])].endswith("its .hea/.dat file is missing")
    assert "sampling rate 500 Hz, expected 100 Hz" in reason[(DB, plant_row["wrong_rate"])]
    assert "signal shape (500, 12)" in reason[(DB, plant_row["short_record"])]
    assert "cannot read WFDB record" in reason[(DB, plant_row["unreadable_header"])]
    assert reason[(DB, built.moved + 2)].startswith("strat_fold: patient also has training records")
    assert reason[(DB, len(built.db) + 1)].startswith("ecg_id: the same ECG as line ")
    assert "diagnostic_class: expected one of" in reason[(STATEMENTS, max(r for f, r in built.expected if f == STATEMENTS))]


def test_labels_are_diagnostic_superclasses(built: SimpleNamespace) -> None:
    statements = pd.read_csv(built.raw / STATEMENTS, index_col=0)
    diag = statements[(statements["diagnostic"] == 1) & statements["diagnostic_class"].isin(SUPERCLASSES)]
    raw = _raw_rows(built)
    expected = np.zeros((len(raw), len(SUPERCLASSES)))
    for i, text in enumerate(raw["scp_codes"]):
        for code in ast.literal_eval(text):
            if code in diag.index:
                expected[i, SUPERCLASSES.index(diag.at[code, "diagnostic_class"])] = 1.0
    y = built.records[label_columns(built.adapter.task)].to_numpy()
    np.testing.assert_array_equal(y, expected)
    assert (y.sum(axis=1) >= 2).any()  # multi-label records exist
    # Records without a diagnostic superclass are kept, all-zero and marked (the paper keeps them).
    no_sc = set(built.truth.loc[built.truth["plant"] == "no_superclass", "source_row"])
    marked = built.records["no_diagnostic_label"].to_numpy()
    assert set(built.records.loc[marked, "_source_row"]) == no_sc and len(no_sc) == 3
    assert (y[marked] == 0).all() and (y[~marked].sum(axis=1) > 0).all()


def test_split_and_patient_ids(built: SimpleNamespace) -> None:
    raw, rec = _raw_rows(built), built.records
    assert ((raw["strat_fold"] == "10") == (rec["split"] == "test")).all()
    assert set(rec["split"]) == {"train", "test"}
    assert set(rec.loc[rec["split"] == "test", "raw_patient_id"]).isdisjoint(rec.loc[rec["split"] == "train", "raw_patient_id"])
    assert raw["patient_id"].str.endswith(".0").all()  # written as a float in the release ...
    assert (rec["raw_patient_id"] == raw["patient_id"].str.removesuffix(".0")).all()  # ... one id per patient
    assert rec.groupby("raw_patient_id").size().max() >= 3
    dropped = [r - 2 for (f, r), s in built.expected.items() if f == DB and s != "decode"]
    assert set(rec["raw_patient_id"]) == set(built.db.drop(index=dropped)["patient_id"].str.removesuffix(".0"))


def test_subgroups(built: SimpleNamespace) -> None:
    raw, rec = _raw_rows(built), built.records
    assert (rec["sex"] == raw["sex"].map({"0": "Male", "1": "Female"})).all()
    assert ((raw["extra_beats"] != "") == (rec["extra_beats"] == "present")).all()
    assert set(rec["extra_beats"]) == {"present", "absent"}
    assert set(rec["age_band"]) <= {"0-17", "18-39", "40-64", "65-79", "80+", "Unknown"}
    by_plant = dict(zip(built.truth["source_row"], built.truth["plant"], strict=True))
    plant = rec["_source_row"].map(by_plant)
    assert (rec.loc[plant == "age_300", "age_band"] == "80+").all() and (raw.loc[(plant == "age_300").to_numpy(), "age"] == "300.0").all()
    assert (rec.loc[plant == "missing_age", "age_band"] == "Unknown").all() and (plant == "missing_age").sum() == 1


def test_decoded_signals_are_raw_millivolts(built: SimpleNamespace) -> None:
    x = built.snap.inputs()
    assert x.shape == (built.snap.n_accepted, 12, 1000) and x.dtype == np.float32
    first = built.records.iloc[0]
    signal, fields = wfdb.rdsamp(str(built.raw / first["filename_lr"]))
    assert fields["fs"] == 100
    np.testing.assert_array_equal(x[0], signal.T.astype(np.float32))  # channels-first, not normalised
    assert 0.5 < np.abs(x).max() < 20
    chunk = built.records.iloc[5:35]
    out = built.adapter.decode_inputs(chunk, built.raw)
    assert set(out.ok_positions) | set(out.failures) == set(chunk.index)
    assert out.x.shape == (len(out.ok_positions), 12, 1000)


def test_signals_carry_the_labels(built: SimpleNamespace) -> None:
    """Hypertrophy gives tall R waves in V5: a model has something to learn."""
    failed = {r for (f, r), s in built.expected.items() if s == "decode"}
    ok = built.records[~built.records["_source_row"].isin(failed)]
    x = built.snap.inputs()
    v5_peak = x[:, LEADS.index("V5")].max(axis=1)
    hyp = ok["y_hyp"].to_numpy() == 1
    assert hyp.sum() >= 3
    assert v5_peak[hyp].mean() > 1.5 * v5_peak[~hyp].mean()


def test_leads_are_put_in_standard_order(tmp_path: Path) -> None:
    signal = ecg_waveform({"MI"}, np.random.default_rng(0))
    perm = [11, 0, 5, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    wfdb.wrsamp(
        "rec",
        fs=100,
        units=["mV"] * 12,
        sig_name=[LEADS[i] for i in perm],
        p_signal=signal[:, perm],
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(tmp_path),
    )
    np.testing.assert_allclose(read_ecg(tmp_path / "rec"), signal.T, atol=1e-3)


def test_missing_column_or_file_is_structural(built: SimpleNamespace, tmp_path: Path) -> None:
    built.db.drop(columns=["scp_codes"]).to_csv(tmp_path / DB, index=False)
    shutil.copy(built.raw / STATEMENTS, tmp_path / STATEMENTS)
    with pytest.raises(StructuralError) as err:
        PTBXL().read_records(tmp_path, Quarantine())
    assert err.value.file == DB and err.value.column == "scp_codes" and "'scp_codes'" in str(err.value)
    (tmp_path / STATEMENTS).unlink()
    with pytest.raises(StructuralError, match=r"scp_statements\.csv: file not found"):
        PTBXL().n_raw_rows(tmp_path)

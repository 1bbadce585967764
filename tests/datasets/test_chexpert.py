"""CheXpert adapter on the synthetic release: the paper's definitions (method §1.1) and design D2.

One module fixture writes the cohort, adds a few more awkward rows by editing the files (a duplicated
image row, an ambiguous demographics row, a test row of a training patient) and builds a snapshot
once; the tests check what came out against the writer's truth and the raw CSVs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tasks.datasets import get_dataset
from tasks.datasets.chexpert import CXR_LABELS, CheXpert
from tasks.datasets.layout import label_column, quarantine_duplicates, quarantine_split_overlap
from tasks.datasets.quarantine import Quarantine
from tasks.errors import ConfigError, StructuralError
from tasks.ingest.snapshot import build_snapshot, label_columns
from tasks.synthetic import get_synthetic_writer
from tasks.synthetic.chexpert import TRUTH_FILE

N_PATIENTS = 60
RELEASE = "CheXpert-v1.0"


class _Capturing(CheXpert):
    """The adapter, keeping the frame read_records returned (the snapshot drops raw ids and paths)."""

    captured: pd.DataFrame

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        records = super().read_records(raw_dir, quarantine)
        self.captured = records.copy()
        return records


def _read_raw(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    raw = get_synthetic_writer("chexpert")(tmp_path_factory.mktemp("raw"), N_PATIENTS, seed=7)
    truth = pd.read_csv(raw / TRUTH_FILE, keep_default_na=False)
    train = _read_raw(raw / RELEASE / "train.csv")
    valid = _read_raw(raw / RELEASE / "valid.csv")
    demo = _read_raw(raw / "CHEXPERT_DEMO.csv")
    planted = set(truth.loc[truth["source_file"] == "train.csv", "source_row"])
    line = next(r for r in range(2, len(train) + 2) if r not in planted)
    patient = train.at[line - 2, "Path"].split("/")[2]  # a training patient with an ordinary row
    # That row listed twice (dedupe) and a valid.csv row of the same patient (cohort) ...
    train = pd.concat([train, train.iloc[[line - 2]]], ignore_index=True)
    leak = valid.iloc[[0]].assign(Path=f"{RELEASE}/valid/{patient}/study9/view1_frontal.jpg")
    valid = pd.concat([valid, leak], ignore_index=True)
    # ... and the patient twice in the demographics: both copies quarantined, race unknown.
    demo = pd.concat([demo, demo[demo["PATIENT"] == patient].assign(PRIMARY_RACE="Asian")], ignore_index=True)
    extra = [("train.csv", len(train) + 1, "dedupe"), ("valid.csv", len(valid) + 1, "cohort")]
    extra += [("CHEXPERT_DEMO.csv", int(i) + 2, "contract") for i in np.flatnonzero(demo["PATIENT"] == patient)]
    train.to_csv(raw / RELEASE / "train.csv", index=False)
    valid.to_csv(raw / RELEASE / "valid.csv", index=False)
    demo.to_csv(raw / "CHEXPERT_DEMO.csv", index=False)

    adapter = _Capturing()
    snap = build_snapshot(adapter, raw, tmp_path_factory.mktemp("results"), b"0123456789abcdef")
    expected = {
        (f, int(r)): s for f, r, s in truth.loc[truth["stage"] != "", ["source_file", "source_row", "stage"]].itertuples(index=False)
    }
    expected.update({(f, r): s for f, r, s in extra})
    return SimpleNamespace(
        raw=raw,
        truth=truth,
        train=train,
        valid=valid,
        demo=demo,
        adapter=adapter,
        records=adapter.captured,
        snap=snap,
        expected=expected,
        patient=patient,
    )


def _decoded(built: SimpleNamespace) -> pd.DataFrame:
    """The records that decoded, in snapshot order (rows of snap.inputs())."""
    failed = {k for k, stage in built.expected.items() if stage == "decode"}
    rec = built.records
    return rec[[k not in failed for k in zip(rec["_source_file"], rec["_source_row"], strict=True)]]


def test_counts_after_each_filter(built: SimpleNamespace) -> None:
    q = built.snap.quarantine()
    n_images = len(built.train) + len(built.valid)
    stages = q["stage"].value_counts().to_dict()
    assert built.snap.n_raw == n_images + 2  # + the two ambiguous demographics rows
    assert stages == {
        "contract": 3,
        "cohort": 1 + int((built.truth["plant"] == "sex_unknown").sum()),
        "dedupe": 1,
        "decode": 3,
    }
    # read_records returns every image row that passed contract, dedupe and cohort filters ...
    assert len(built.records) == n_images - 1 - stages["dedupe"] - stages["cohort"]
    # ... and the snapshot keeps those that decoded: raw rows = accepted + quarantined.
    assert built.snap.n_accepted == len(built.records) - stages["decode"]
    assert built.snap.n_raw == built.snap.n_accepted + built.snap.n_quarantined


def test_every_excluded_row_is_quarantined_with_its_reason(built: SimpleNamespace) -> None:
    q = built.snap.quarantine()
    got = {(f, int(r)): s for f, r, s in q[["source_file", "source_row", "stage"]].itertuples(index=False)}
    assert got == built.expected
    reasons = q.set_index(["source_file", "source_row"])["reason"]
    plants = built.truth.set_index(["source_file", "source_row"])["plant"]
    for key, reason in reasons.items():
        plant = plants.get(key, "")
        if plant == "sex_unknown":
            assert reason.startswith("Sex: 'Unknown'")
        elif plant == "damaged_row":
            assert reason == "Age: missing value, found empty"
        elif plant == "missing_image":
            assert "listed but missing" in reason
        elif plant == "truncated_jpeg":
            assert "truncated" in reason
        elif plant == "text_as_jpeg":
            assert "cannot identify image file" in reason
    assert reasons[("train.csv", len(built.train) + 1)].startswith("Path: the same image as line ")
    assert reasons[("valid.csv", len(built.valid) + 1)].startswith("Path: patient also has training records")
    assert all("duplicate value" in reasons[("CHEXPERT_DEMO.csv", r)] for f, r in built.expected if f == "CHEXPERT_DEMO.csv")
    # design D4: no raw patient id (the patient folder name) in the reasons the adapter writes. (The contract
    # check of the PATIENT column itself quotes the duplicated value: tasks/datasets/contracts.py's behaviour.)
    own = q[q["column"] != "PATIENT"]
    assert not own["reason"].str.contains("patient0").any()


def test_labels_are_u_ones_with_missing_as_negative(built: SimpleNamespace) -> None:
    raw = {"train.csv": built.train, "valid.csv": built.valid}
    y = built.records[[label_column(n) for n in CXR_LABELS]].to_numpy()
    cells = np.array(
        [
            [raw[f].at[r - 2, n] for n in CXR_LABELS]
            for f, r in zip(built.records["_source_file"], built.records["_source_row"], strict=True)
        ]
    )
    assert (cells == "-1.0").any() and (cells == "").any()  # the fixture exercises both rules
    expected = np.where(np.isin(cells, ["1.0", "-1.0"]), 1.0, 0.0)
    np.testing.assert_array_equal(y, expected)
    assert list(built.records.filter(like="y_").columns) == label_columns(built.adapter.task)
    assert built.adapter.task.label_names[0] == "No Finding"  # the CXR score rule relies on it


def test_split_and_patient_ids(built: SimpleNamespace) -> None:
    rec = built.records
    assert (rec.loc[rec["_source_file"] == "train.csv", "split"] == "train").all()
    assert (rec.loc[rec["_source_file"] == "valid.csv", "split"] == "test").all()
    assert set(rec.loc[rec["split"] == "test", "raw_patient_id"]).isdisjoint(rec.loc[rec["split"] == "train", "raw_patient_id"])
    folder = rec["path"].str.split("/").str[2]
    assert (rec["raw_patient_id"] == folder).all()
    per_patient = rec.groupby("raw_patient_id").size()
    assert per_patient.max() >= 3  # several images of one patient share one id
    raw = pd.concat([built.train.assign(f="train.csv"), built.valid.assign(f="valid.csv")], ignore_index=True)
    raw["r"] = raw.groupby("f").cumcount() + 2
    dropped = {k for k, stage in built.expected.items() if stage in ("contract", "cohort", "dedupe")}
    kept = raw[[k not in dropped for k in zip(raw["f"], raw["r"], strict=True)]]
    assert set(rec["raw_patient_id"]) == set(kept["Path"].str.split("/").str[2])
    sex_unknown = built.truth.loc[built.truth["plant"] == "sex_unknown", "source_row"]
    gone = set(built.train.loc[sex_unknown - 2, "Path"].str.split("/").str[2])
    assert len(gone) == 1 and gone.isdisjoint(rec["raw_patient_id"])


def test_subgroups(built: SimpleNamespace) -> None:
    rec = built.records
    assert set(rec["race"]) <= {"Asian", "Black", "White", "Other/Unknown"}
    assert set(rec["sex"]) == {"Male", "Female"}
    assert set(rec["view"]) <= {"AP", "PA", "Lateral", "Other/Unknown"}
    assert set(rec["age_band"]) <= {"0-17", "18-39", "40-64", "65-79", "80+"}
    raw = pd.concat([built.train.assign(f="train.csv"), built.valid.assign(f="valid.csv")], ignore_index=True)
    raw["r"] = raw.groupby("f").cumcount() + 2
    row = rec.merge(raw, left_on=["_source_file", "_source_row"], right_on=["f", "r"], validate="one_to_one")
    assert ((row["Frontal/Lateral"] == "Lateral") == (row["view"] == "Lateral")).all()
    assert (row.loc[row["Frontal/Lateral"] == "Frontal", "view"] == row.loc[row["Frontal/Lateral"] == "Frontal", "AP/PA"]).all()
    assert (row["sex"] == row["Sex"]).all()

    demo = built.demo.drop_duplicates("PATIENT", keep=False).set_index("PATIENT")["PRIMARY_RACE"]

    def collapse(race: str | float) -> str:
        for needle, group in (("BLACK", "Black"), ("WHITE", "White"), ("ASIAN", "Asian")):
            if isinstance(race, str) and needle in race.upper():
                return group
        return "Other/Unknown"

    expected = rec["raw_patient_id"].map(lambda p: collapse(demo.get(p, float("nan"))))
    assert (rec["race"] == expected).all()
    missing = built.truth.loc[built.truth["plant"] == "missing_demographics", "source_row"]
    assert (rec.loc[(rec["_source_file"] == "train.csv") & rec["_source_row"].isin(missing), "race"] == "Other/Unknown").all()
    assert (rec.loc[rec["raw_patient_id"] == built.patient, "race"] == "Other/Unknown").all()


def test_decoded_inputs(built: SimpleNamespace) -> None:
    x = built.snap.inputs()
    assert x.shape == (built.snap.n_accepted, 1, 64, 64) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.1
    chunk = built.records.iloc[10:40]
    out = built.adapter.decode_inputs(chunk, built.raw)
    assert set(out.ok_positions) | set(out.failures) == set(chunk.index)
    assert out.x.shape == (len(out.ok_positions), 1, 64, 64)
    big = get_dataset("chexpert", {"image_size": 128})
    assert big.task.input_shape == (1, 128, 128) and CheXpert.task.input_shape == (1, 64, 64)
    ok = built.records.index[~built.records.index.isin(list(out.failures))][:3]
    assert big.decode_inputs(built.records.loc[ok], built.raw).x.shape == (3, 1, 128, 128)


def test_images_carry_the_labels(built: SimpleNamespace) -> None:
    """Pleural effusion brightens the lung bases of frontal views: a model has something to learn."""
    x = built.snap.inputs()
    ok = _decoded(built)
    frontal = (ok["view"] != "Lateral").to_numpy()
    bases = (x[:, 0, 42:47, 15:23].mean(axis=(1, 2)) + x[:, 0, 42:47, 41:49].mean(axis=(1, 2))) / 2
    effusion = ok["y_pleural_effusion"].to_numpy() == 1
    assert bases[frontal & effusion].mean() > bases[frontal & ~effusion].mean() + 0.05


def test_missing_column_or_file_is_structural(built: SimpleNamespace, tmp_path: Path) -> None:
    (tmp_path / RELEASE).mkdir()
    built.train.drop(columns=["Sex"]).to_csv(tmp_path / RELEASE / "train.csv", index=False)
    shutil.copy(built.raw / "CHEXPERT_DEMO.csv", tmp_path / "CHEXPERT_DEMO.csv")
    with pytest.raises(StructuralError) as err:
        CheXpert().read_records(tmp_path, Quarantine())
    assert err.value.file == "train.csv" and err.value.column == "Sex"
    assert "train.csv" in str(err.value) and "'Sex'" in str(err.value)
    (tmp_path / "CHEXPERT_DEMO.csv").unlink()
    with pytest.raises(StructuralError, match=r"CHEXPERT_DEMO\.csv: file not found"):
        CheXpert().n_raw_rows(tmp_path)


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="image_size"):
        CheXpert({"image_size": "large"})
    with pytest.raises(ConfigError, match="image_size"):
        CheXpert({"image_size": 4})


def test_dedupe_and_split_overlap_helpers() -> None:
    df = pd.DataFrame(
        {
            "k": ["a", "b", "a"],
            "split": ["train", "test", "test"],
            "_source_file": "t.csv",
            "_source_row": [2, 3, 4],
        }
    )
    q = Quarantine()
    kept = quarantine_duplicates(df, "k", "image", q)
    assert list(kept["_source_row"]) == [2, 3]
    assert q.entries == [("t.csv", 4, "dedupe", "k", "k: the same image as line 2; the first row is kept")]
    df = pd.DataFrame(
        {
            "p": ["x", "x", "y"],
            "split": ["train", "test", "test"],
            "_source_file": "t.csv",
            "_source_row": [2, 3, 4],
        }
    )
    kept = quarantine_split_overlap(df, df["p"], "p", q)
    assert list(kept["_source_row"]) == [2, 4] and q.entries[-1][:4] == ("t.csv", 3, "cohort", "p")

"""EMBED adapter on the synthetic copy and on hand-made tables: the paper's cohort filters in order
(method §1.5), label, patient split, subgroups, decoding and the reconciliation."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.datasets import get_dataset
from tasks.datasets.embed import png_name
from tasks.datasets.quarantine import Quarantine
from tasks.errors import ConfigError, StructuralError
from tasks.ingest.snapshot import build_snapshot
from tasks.synthetic import get_synthetic_writer

N = 60
CLIN = "EMBED_OpenData_clinical_reduced.csv"
META = "EMBED_OpenData_metadata_reduced.csv"
LABELS = ["y_birads_a", "y_birads_b", "y_birads_c", "y_birads_d"]
# planted case -> (stage, column) of its quarantine entry
EXPECTED = {
    "diagnostic": ("cohort", "desc"),
    "no_clinical": ("cohort", "acc_anon"),
    "duplicate_path": ("dedupe", "anon_dicom_path"),
    "missing_race": ("cohort", "RACE_DESC"),
    "other_view": ("cohort", "ViewPosition"),
    "male": ("cohort", "tissueden"),
    "density5": ("cohort", "tissueden"),
    "no_density": ("cohort", "tissueden"),
    "no_path": ("contract", "anon_dicom_path"),
    "bad_finding": ("contract", "tissueden"),
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("embed") / "raw"
    get_synthetic_writer("embed")(root, N, seed=11)
    return root


@pytest.fixture(scope="module")
def truth(raw: Path) -> pd.DataFrame:
    return pd.read_csv(raw / "_synthetic_truth.csv", keep_default_na=False)


@pytest.fixture(scope="module")
def read(raw: Path) -> tuple[pd.DataFrame, Quarantine]:
    q = Quarantine()
    return get_dataset("embed").read_records(raw, q), q


def test_task_matches_the_paper() -> None:
    adapter = get_dataset("embed")
    task = adapter.task
    assert task.kind == "multiclass" and task.score_transform == "softmax_mass"
    assert task.label_names == ("BIRADS-A", "BIRADS-B", "BIRADS-C", "BIRADS-D")
    assert task.input_shape == (1, 64, 48)  # H x W, as the paper's 64x48
    assert task.default_architecture == "wrn_28_2" and task.flip_views_ok
    assert adapter.subgroup_attributes == ["race", "view", "density", "assessment", "age_band"]
    assert get_dataset("embed", {"image_height": 128}).task.input_shape == (1, 128, 96)
    assert png_name("/mnt/x/cohort_1/123/456/1.2.3.dcm") == "1.2.3.png"


def test_every_row_has_its_expected_fate(read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame) -> None:
    records, q = read
    frame = q.frame().set_index(["source_file", "source_row"])
    kept = set(records["_source_row"])
    for row in truth.itertuples():
        if row.fate in ("accepted", "decode"):
            assert row.source_file == META and row.source_row in kept, row
            continue
        entry = frame.loc[(row.source_file, row.source_row)]
        assert (entry["stage"], entry["column"]) == EXPECTED[row.plant], row
    assert records["_source_row"].is_unique  # a multi-finding exam still gives one record per image


def test_counts_after_each_filter(raw: Path, read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame) -> None:
    records, q = read
    frame = q.frame()
    n_meta = len(pd.read_csv(raw / META))
    adapter = get_dataset("embed")
    # primary table = metadata; the one clinical contract failure is counted on top
    assert adapter.n_raw_rows(raw) == n_meta + 1 == len(truth)
    plants = truth["plant"].value_counts()
    assert plants["duplicate_path"] == 2 and plants["other_view"] == 3 and plants["no_path"] == 1
    assert plants["no_clinical"] == 4 and plants["density5"] == 4 and plants["no_density"] == 4  # 4 views/exam
    assert frame["stage"].value_counts().to_dict() == {
        "cohort": int((truth["fate"] == "cohort").sum()),
        "contract": 2,
        "dedupe": 2,
    }
    assert len(records) == int(truth["fate"].isin(["accepted", "decode"]).sum())
    assert len(records) + len(frame) == adapter.n_raw_rows(raw)
    reasons = frame.set_index("source_row")["reason"]
    for plant, needle in (
        ("male", "tissueden: 5"),
        ("density5", "tissueden: 5"),
        ("no_density", "tissueden: missing"),
        ("diagnostic", "not a screening exam"),
        ("no_clinical", "has no row in"),
    ):
        rows = truth.loc[(truth["plant"] == plant) & (truth["source_file"] == META), "source_row"]
        assert reasons.loc[rows].str.contains(needle, regex=False).all(), plant
    male_rows = truth.loc[truth["plant"] == "male", "source_row"]
    assert reasons.loc[male_rows].str.contains("GENDER_DESC 'Male'").all()


def test_labels(read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame) -> None:
    records, _ = read
    src = truth[truth["source_file"] == META].set_index("source_row").loc[records["_source_row"]]
    y = records[LABELS].to_numpy()
    assert y.dtype == np.float64 and (y.sum(axis=1) == 1).all()
    assert (y.argmax(axis=1) == src["density"].to_numpy() - 1).all()  # label = tissueden - 1
    assert set(y.argmax(axis=1)) == {0, 1, 2, 3}
    names = np.array(["BIRADS A", "BIRADS B", "BIRADS C", "BIRADS D"])[y.argmax(axis=1)]
    assert (records["density"].to_numpy() == names).all()


def test_patient_split(raw: Path, read: tuple[pd.DataFrame, Quarantine]) -> None:
    records, _ = read
    per_patient = records.groupby("raw_patient_id")["split"].nunique()
    assert (per_patient == 1).all()  # patient-disjoint
    n_patients = records["raw_patient_id"].nunique()
    test_patients = records.loc[records["split"] == "test", "raw_patient_id"].unique()
    assert len(test_patients) == min(500, math.ceil(0.1 * n_patients))
    # seeded, from the sorted patient ids: the same draw as default_rng(420) over them
    expected = np.random.default_rng(420).choice(
        np.sort(records["raw_patient_id"].astype(int).unique()), size=len(test_patients), replace=False
    )
    assert set(test_patients.astype(int)) == set(expected)
    assert (records.groupby("raw_patient_id").size() > 1).any()  # patients have several records
    again = get_dataset("embed").read_records(raw, Quarantine())
    assert (again["split"] == records["split"]).all()
    five = get_dataset("embed", {"n_test_patients": 5, "split_seed": 1}).read_records(raw, Quarantine())
    assert five.loc[five["split"] == "test", "raw_patient_id"].nunique() == 5
    with pytest.raises(ConfigError, match="n_test_patients"):
        get_dataset("embed", {"n_test_patients": 10_000}).read_records(raw, Quarantine())


def test_subgroups(raw: Path, read: tuple[pd.DataFrame, Quarantine]) -> None:
    records, _ = read
    meta = pd.read_csv(raw / META, dtype=str, keep_default_na=False)
    meta["_source_row"] = np.arange(len(meta)) + 2
    clin = pd.read_csv(raw / CLIN, dtype=str, keep_default_na=False).drop_duplicates(["acc_anon"])
    src = meta.set_index("_source_row").loc[records["_source_row"]].merge(clin, on=["empi_anon", "acc_anon"], how="left")
    race = {"African American  or Black": "Black", "Caucasian or White": "White", "Asian": "Asian"}
    assert (records["race"].to_numpy() == src["RACE_DESC"].map(race).fillna("Other/Unknown").to_numpy()).all()
    assert set(records["race"]) == {"Black", "White", "Asian", "Other/Unknown"}
    assert (records["view"].to_numpy() == src["ViewPosition"].to_numpy()).all()
    assert set(records["view"]) == {"MLO", "CC"}
    assert set(records["assessment"]) <= set("ANBPSMKX") and len(set(records["assessment"])) > 1
    assert set(records["age_band"]) <= {"<40", "40-49", "50-59", "60-69", "70-79", "80+", "Unknown"}
    assert records[["race", "view", "density", "assessment", "age_band"]].notna().all().all()


def test_decode(raw: Path, read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame, tmp_path: Path) -> None:
    records, _ = read
    adapter = get_dataset("embed")
    chunk = adapter.decode_inputs(records, raw)
    assert chunk.x.shape == (len(records) - 4, 1, 64, 48) and chunk.x.dtype == np.float32
    assert chunk.x.min() >= -1.0 and chunk.x.max() <= 1.0
    failed = set(records.loc[list(chunk.failures), "_source_row"])
    assert failed == set(truth.loc[truth["fate"] == "decode", "source_row"])
    reasons = " | ".join(chunk.failures.values())
    for needle in ("listed but missing", "truncated", "'I;16'", "cannot identify"):
        assert needle in reasons
    # denser breasts are brighter on average: the label is learnable from the pixels
    y = records.loc[chunk.ok_positions, LABELS].to_numpy().argmax(axis=1)
    means = [chunk.x[y == k].mean() for k in range(4)]
    assert means == sorted(means)
    # option png_root: the PNG folder may live elsewhere
    moved = tmp_path / "pngs"
    shutil.copytree(raw / "png", moved)
    sub = records.iloc[:20]
    other = get_dataset("embed", {"png_root": str(moved)}).decode_inputs(sub, tmp_path / "nowhere")
    assert np.array_equal(other.x, adapter.decode_inputs(sub, raw).x)


def test_snapshot_reconciles(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, truth: pd.DataFrame) -> None:
    monkeypatch.setenv("MEDAUDIT_SECRET_FILE", str(tmp_path / "secret"))
    snap = build_snapshot(get_dataset("embed"), raw, tmp_path / "results", secret=b"k" * 32)
    assert snap.n_raw == len(truth) == snap.n_accepted + snap.n_quarantined
    assert snap.n_accepted == (truth["fate"] == "accepted").sum()
    stages = snap.quarantine()["stage"].value_counts().to_dict()
    assert stages["decode"] == 4 and stages["dedupe"] == 2 and stages["contract"] == 2
    assert snap.inputs().shape == (snap.n_accepted, 1, 64, 48)


# --- hand-made tables: filter order and reasons, no images needed for read_records

_CLIN_COLS = [
    "empi_anon",
    "acc_anon",
    "desc",
    "tissueden",
    "asses",
    "RACE_DESC",
    "GENDER_DESC",
    "age_at_study",
]


def _write_tables(folder: Path, clinical: list[list[object]], metadata: list[list[object]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(clinical, columns=_CLIN_COLS).to_csv(folder / CLIN, index=False)
    pd.DataFrame(metadata, columns=["empi_anon", "acc_anon", "anon_dicom_path", "ViewPosition"]).to_csv(folder / META, index=False)


def test_filters_apply_in_the_papers_order(tmp_path: Path) -> None:
    white, black = "Caucasian or White", "African American  or Black"
    clinical = [
        [1, 10, "MG Screening Bilateral", 2, "N", white, "Female", 55],  # exam 10: fine (two findings)
        [1, 10, "MG Screening Bilateral", 3, "B", white, "Female", 55],  # second finding: join duplicate
        [2, 20, "MG Diagnostic Left", 5, "B", None, "Male", 60],  # diagnostic AND male AND no race
        [3, 30, "mg SCREEN bilat", 2, "A", None, "Female", 47],  # no race (and an odd view below)
        [4, 40, "MG Screening Bilateral", 5, "N", black, "Male", 61],  # male with density 5
        [5, 50, "MG Screening Bilateral", None, "N", "Multiple", "Female", 70],  # no density
        [6, 60, "MG Screening Bilateral", 4, "N", "Asian", "Female", 38],
    ]
    metadata = [
        [1, 10, "/a/1/10/img1.dcm", "CC"],  # line 2: accepted (first finding's density 2)
        [1, 10, "/a/1/10/img1.dcm", "CC"],  # line 3: dedupe of line 2
        [2, 20, "/a/2/20/img2.dcm", "MLO"],  # line 4: screening filter first
        [3, 30, "/a/3/30/img3.dcm", "XCCL"],  # line 5: race before view
        [4, 40, "/a/4/40/img4.dcm", "MLO"],  # line 6: male / density 5
        [5, 50, "/a/5/50/img5.dcm", "CC"],  # line 7: no density
        [7, 70, "/a/7/70/img7.dcm", "CC"],  # line 8: exam not in the clinical table
        [6, 60, "/a/6/60/img6.dcm", "XCCL"],  # line 9: view
        [6, 60, "/a/6/60/img8.dcm", "MLO"],  # line 10: accepted
    ]
    _write_tables(tmp_path, clinical, metadata)
    q = Quarantine()
    records = get_dataset("embed", {"n_test_patients": 1}).read_records(tmp_path, q)
    frame = q.frame().set_index("source_row")
    assert frame["column"].to_dict() == {
        3: "anon_dicom_path",
        4: "desc",
        5: "RACE_DESC",
        6: "tissueden",
        7: "tissueden",
        8: "acc_anon",
        9: "ViewPosition",
    }
    assert frame.loc[3, "stage"] == "dedupe" and "line 2" in frame.loc[3, "reason"]
    assert (frame.drop(index=3)["stage"] == "cohort").all()
    assert "'MG Diagnostic Left'" in frame.loc[4, "reason"] and f"{CLIN} line 4" in frame.loc[4, "reason"]
    assert "'XCCL'" in frame.loc[9, "reason"] and "missing" in frame.loc[7, "reason"]
    assert list(records["_source_row"]) == [2, 10]
    assert records["y_birads_b"].tolist() == [1.0, 0.0] and records["y_birads_d"].tolist() == [0.0, 1.0]
    assert records["race"].tolist() == ["White", "Asian"] and records["assessment"].tolist() == ["N", "N"]
    assert records["image"].tolist() == ["1/img1.png", "6/img8.png"]
    assert records["age_band"].tolist() == ["50-59", "<40"]
    assert get_dataset("embed").n_raw_rows(tmp_path) == len(metadata) == len(records) + len(frame)


def test_missing_column_is_structural(tmp_path: Path) -> None:
    clinical = [[1, 10, "MG Screening Bilateral", 2, "N", "Asian", "Female", 55]]
    _write_tables(tmp_path, clinical, [[1, 10, "/a/1.dcm", "CC"]])
    clin = pd.read_csv(tmp_path / CLIN)
    clin.drop(columns=["tissueden"]).to_csv(tmp_path / CLIN, index=False)
    with pytest.raises(StructuralError) as err:
        get_dataset("embed").read_records(tmp_path, Quarantine())
    assert err.value.column == "tissueden" and CLIN in str(err.value)
    clin.to_csv(tmp_path / CLIN, index=False)
    pd.DataFrame({"empi_anon": [1], "acc_anon": [10], "ViewPosition": ["CC"]}).to_csv(tmp_path / META, index=False)
    with pytest.raises(StructuralError) as err:
        get_dataset("embed").read_records(tmp_path, Quarantine())
    assert err.value.column == "anon_dicom_path" and META in str(err.value)
    (tmp_path / META).unlink()
    with pytest.raises(StructuralError, match=META):
        get_dataset("embed").read_records(tmp_path, Quarantine())


def test_writer_without_awkward_rows_gives_four_views_per_exam(tmp_path: Path) -> None:
    write = get_synthetic_writer("embed")
    clean = write(tmp_path / "clean", 5, seed=0, awkward=False)
    meta = pd.read_csv(clean)
    assert len(meta) == 4 * len(pd.read_csv(tmp_path / "clean" / CLIN).drop_duplicates("acc_anon"))

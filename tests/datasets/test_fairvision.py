"""FairVision adapter on the synthetic copy: the paper's definitions (method §1.4), automatic
QC, the quarantine of every excluded row, decoding and the raw = accepted + quarantined reconciliation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.datasets import get_dataset
from tasks.datasets.quarantine import Quarantine
from tasks.errors import ConfigError, StructuralError
from tasks.ingest.snapshot import build_snapshot
from tasks.synthetic import get_synthetic_writer

N = 90
FILES = {"glaucoma": "data_summary_glaucoma.csv", "dr": "data_summary_dr.csv", "amd": "data_summary_amd.csv"}
FOLDERS = {"glaucoma": "Glaucoma", "dr": "DR", "amd": "AMD"}
# The paper's unified label (FAIRVISION_LABELS order) from each sub-dataset's disease column.
UNIFIED = {
    ("glaucoma", "no"): 0,
    ("glaucoma", "yes"): 3,
    ("dr", "non-vision threatening dr"): 1,
    ("dr", "vision threatening dr"): 2,
    ("amd", "normal"): 0,
    ("amd", "early amd"): 4,
    ("amd", "intermediate amd"): 5,
    ("amd", "late amd"): 6,
}
NAMES = [
    "healthy",
    "non-vision threatening dr",
    "vision threatening dr",
    "glaucoma",
    "early amd",
    "intermediate amd",
    "late amd",
]
LABELS = [
    "y_healthy",
    "y_non_vision_threatening_dr",
    "y_vision_threatening_dr",
    "y_glaucoma",
    "y_early_amd",
    "y_intermediate_amd",
    "y_late_amd",
]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fairvision") / "FairVision"
    get_synthetic_writer("fairvision")(root, N, seed=5)
    return root


@pytest.fixture(scope="module")
def truth(raw: Path) -> pd.DataFrame:
    return pd.read_csv(raw / "_synthetic_truth.csv", keep_default_na=False)


@pytest.fixture(scope="module")
def read(raw: Path) -> tuple[pd.DataFrame, Quarantine]:
    q = Quarantine()
    return get_dataset("fairvision").read_records(raw, q), q


def _key(df: pd.DataFrame, file_col: str = "_source_file", row_col: str = "_source_row") -> list[tuple[str, int]]:
    return list(zip(df[file_col], df[row_col].astype(int), strict=True))


def test_task_matches_the_paper() -> None:
    adapter = get_dataset("fairvision")
    task = adapter.task
    assert task.kind == "multiclass" and task.score_transform == "softmax_mass"
    assert list(task.label_names) == NAMES
    assert task.input_shape == (1, 64, 64) and task.default_architecture == "wrn_28_2" and task.flip_views_ok
    assert adapter.subgroup_attributes == ["race", "gender", "ethnicity", "age_band", "disease"]


def test_counts_after_each_filter(raw: Path, read: tuple[pd.DataFrame, Quarantine]) -> None:
    records, q = read
    frame = q.frame()
    adapter = get_dataset("fairvision")
    assert adapter.n_raw_rows(raw) == N  # sum of the three summaries
    # contract: 1 unknown DR grade; cohort (automatic QC): 2 near-black + 1 blank image
    assert frame["stage"].value_counts().to_dict() == {"cohort": 3, "contract": 1}
    assert len(records) == N - 4 and len(records) + len(frame) == N


def test_every_row_has_its_expected_fate(read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame) -> None:
    records, q = read
    frame = q.frame()
    stage = dict(zip(_key(frame, "source_file", "source_row"), frame["stage"], strict=True))
    kept = set(_key(records))
    for row in truth.itertuples():
        key = (row.source_file, row.source_row)
        if row.fate in ("accepted", "decode"):
            assert key in kept, row
        else:
            assert stage.get(key) == row.fate, row


def test_qc_reasons_carry_the_measured_values(read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame) -> None:
    frame = read[1].frame()
    qc = frame[frame["stage"] == "cohort"]
    assert set(qc["column"]) == {"filename"}
    for reason in qc["reason"]:
        assert "automatic QC" in reason and "slo_fundus_" not in reason  # the file name is the patient number
        mean = float(reason.split("mean ")[1].split()[0])
        std = float(reason.split("std ")[1].split()[0])
        assert mean <= 1 or std <= 3
    blank = truth.loc[truth["plant"] == "blank"].iloc[0]
    reason = qc.set_index(["source_file", "source_row"]).loc[(blank.source_file, blank.source_row), "reason"]
    assert "mean 128.00" in reason and "std 0.00" in reason
    contract = frame[frame["stage"] == "contract"].iloc[0]
    assert contract["source_file"] == FILES["dr"] and contract["column"] == "dr" and "'unknown'" in contract["reason"]


def test_labels_split_and_patients(read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame) -> None:
    records, _ = read
    src = truth.set_index(["source_file", "source_row"]).loc[_key(records)]
    y = records[LABELS].to_numpy()
    assert y.dtype == np.float64 and (y.sum(axis=1) == 1).all()
    expected = [UNIFIED[(s, lab)] for s, lab in zip(src["subset"], src["label"], strict=True)]
    assert (y.argmax(axis=1) == np.array(expected)).all()
    assert set(y.argmax(axis=1)) == set(range(7))  # every class is present in the fixture
    # split: use == test -> test; training and validation -> train
    assert ((records["split"] == "test").to_numpy() == (src["use"] == "test").to_numpy()).all()
    assert "validation" in set(src.loc[(records["split"] == "train").to_numpy(), "use"])
    # patient id = <g|d|a>_<5-digit id>, one image per patient
    assert (records["raw_patient_id"].to_numpy() == src["patient_id"].to_numpy()).all()
    assert records["raw_patient_id"].str.fullmatch(r"[gda]_\d{5}").all() and records["raw_patient_id"].is_unique


def test_subgroups(read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame) -> None:
    records, _ = read
    assert set(records["race"]) <= {"Asian", "Black", "White", "Other/Unknown"}
    assert set(records["gender"]) <= {"Female", "Male", "Unknown"}
    assert set(records["ethnicity"]) <= {"Hispanic", "Non-Hispanic", "Unknown"}
    assert set(records["age_band"]) <= {"0-17", "18-39", "40-64", "65-79", "80+", "Unknown"}
    assert {"Asian", "Black", "White"} <= set(records["race"])
    missing = truth.loc[truth["plant"] == "missing_demographics", ["source_file", "source_row"]]
    rows = records.set_index(["_source_file", "_source_row"]).loc[_key(missing, "source_file", "source_row")]
    assert (rows["race"] == "Other/Unknown").all() and (rows["gender"] == "Unknown").all()
    assert (rows["ethnicity"] == "Unknown").all() and (rows["age_band"] == "Unknown").all()
    names = np.array(NAMES)[records[LABELS].to_numpy().argmax(axis=1)]
    assert (records["disease"].to_numpy() == names).all()
    assert records[["race", "gender", "ethnicity", "age_band", "disease"]].notna().all().all()


def test_decode(raw: Path, read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame) -> None:
    records, _ = read
    chunk = get_dataset("fairvision").decode_inputs(records, raw)
    assert chunk.x.shape == (len(records) - 4, 1, 64, 64) and chunk.x.dtype == np.float32
    assert chunk.x.min() >= -1.0 and chunk.x.max() <= 1.0
    failed = {(records.at[p, "_source_file"], records.at[p, "_source_row"]) for p in chunk.failures}
    assert failed == set(_key(truth[truth["fate"] == "decode"], "source_file", "source_row"))
    reasons = " | ".join(chunk.failures.values())
    for needle in ("listed but missing", "truncated", "'CMYK'", "cannot identify"):
        assert needle in reasons
    # the input is channel 0 of the JPEG, resized, scaled to [-1, 1]
    pos = int(chunk.ok_positions[0])
    with Image.open(raw / records.at[pos, "image"]) as img:
        ref = np.asarray(img.convert("RGB").getchannel(0).resize((64, 64)), np.float32) / 127.5 - 1
    assert np.allclose(chunk.x[0, 0], ref)


def test_snapshot_reconciles(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, truth: pd.DataFrame) -> None:
    monkeypatch.setenv("MEDAUDIT_SECRET_FILE", str(tmp_path / "secret"))
    snap = build_snapshot(get_dataset("fairvision"), raw, tmp_path / "results", secret=b"k" * 32)
    assert snap.n_raw == N == snap.n_accepted + snap.n_quarantined
    assert snap.n_accepted == (truth["fate"] == "accepted").sum()
    assert snap.quarantine()["stage"].value_counts().to_dict() == {"decode": 4, "cohort": 3, "contract": 1}
    assert snap.inputs().shape == (snap.n_accepted, 1, 64, 64)


def test_subsets_option(raw: Path) -> None:
    adapter = get_dataset("fairvision", {"subsets": ["glaucoma"]})
    records = adapter.read_records(raw, Quarantine())
    assert adapter.n_raw_rows(raw) == len(pd.read_csv(raw / "Glaucoma" / "ReadMe" / FILES["glaucoma"]))
    assert records["raw_patient_id"].str.startswith("g_").all()
    with pytest.raises(ConfigError, match="subsets"):
        get_dataset("fairvision", {"subsets": ["oct"]})


def test_missing_column_is_structural(raw: Path, tmp_path: Path) -> None:
    alt = tmp_path / "FairVision"
    for subset, folder in FOLDERS.items():
        (alt / folder / "ReadMe").mkdir(parents=True)
        shutil.copy(raw / folder / "ReadMe" / FILES[subset], alt / folder / "ReadMe" / FILES[subset])
    dr = alt / "DR" / "ReadMe" / FILES["dr"]
    pd.read_csv(dr, dtype=str, keep_default_na=False).drop(columns=["dr"]).to_csv(dr, index=False)
    with pytest.raises(StructuralError) as err:
        get_dataset("fairvision").read_records(alt, Quarantine())
    assert err.value.column == "dr" and FILES["dr"] in str(err.value)
    shutil.rmtree(alt / "AMD")
    with pytest.raises(StructuralError, match=FILES["amd"]):
        get_dataset("fairvision", {"subsets": ["amd"]}).read_records(alt, Quarantine())


def test_writer_without_awkward_rows_gives_one_image_per_patient(tmp_path: Path) -> None:
    write = get_synthetic_writer("fairvision")
    write(tmp_path / "clean", 9, seed=1, awkward=False)
    assert len(list((tmp_path / "clean").rglob("slo_fundus_*.jpg"))) == 9

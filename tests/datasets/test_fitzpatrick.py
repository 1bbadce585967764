"""Fitzpatrick17k adapter on the synthetic copy: the paper's definitions (method §1.3), the
quarantine of every excluded row, decoding and the raw = accepted + quarantined reconciliation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.datasets import get_dataset
from tasks.datasets.fitzpatrick import NON_DERMATOLOGY_HASHES
from tasks.datasets.quarantine import Quarantine
from tasks.errors import ConfigError, StructuralError
from tasks.ingest.snapshot import build_snapshot
from tasks.synthetic import get_synthetic_writer

N = 120
CSV = "fitzpatrick17k.csv"
LABELS = ["y_non_neoplastic", "y_malignant", "y_benign"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fitz") / "raw"
    get_synthetic_writer("fitzpatrick")(root, N, seed=3)
    return root


@pytest.fixture(scope="module")
def truth(raw: Path) -> pd.DataFrame:
    return pd.read_csv(raw / "_synthetic_truth.csv", keep_default_na=False)


@pytest.fixture(scope="module")
def csv_rows(raw: Path) -> pd.DataFrame:
    df = pd.read_csv(raw / CSV, dtype=str, keep_default_na=False)
    df["_source_row"] = np.arange(len(df)) + 2
    return df


@pytest.fixture(scope="module")
def read(raw: Path) -> tuple[pd.DataFrame, Quarantine]:
    q = Quarantine()
    return get_dataset("fitzpatrick").read_records(raw, q), q


def test_task_matches_the_paper() -> None:
    adapter = get_dataset("fitzpatrick")
    task = adapter.task
    assert task.kind == "multiclass" and task.score_transform == "softmax_mass"
    assert task.label_names == ("non-neoplastic", "malignant", "benign")
    assert task.input_shape == (3, 64, 64)
    assert task.default_architecture == "wrn_28_2" and task.flip_views_ok
    assert adapter.subgroup_attributes == ["skin_type", "disease"]
    assert get_dataset("fitzpatrick", {"image_size": 128}).task.input_shape == (3, 128, 128)


def test_counts_after_each_filter(raw: Path, read: tuple[pd.DataFrame, Quarantine]) -> None:
    records, q = read
    frame = q.frame()
    adapter = get_dataset("fitzpatrick")
    assert adapter.n_raw_rows(raw) == N + 1  # the planted re-listed row is extra
    # contract: 1 empty label; dedupe: 1 re-listed hash; cohort: the paper's 3 non-dermatology hashes
    assert frame["stage"].value_counts().to_dict() == {"cohort": 3, "contract": 1, "dedupe": 1}
    assert len(records) == N + 1 - 5
    assert len(records) + len(frame) == adapter.n_raw_rows(raw)


def test_every_row_has_its_expected_fate(read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame) -> None:
    records, q = read
    frame = q.frame()
    stage = dict(zip(frame["source_row"], frame["stage"], strict=True))
    for row in truth.itertuples():
        if row.fate in ("accepted", "decode"):
            assert row.source_row in set(records["_source_row"]), row
        else:
            assert stage.get(row.source_row) == row.fate, row
    assert set(frame["source_file"]) == {CSV}


def test_quarantine_reasons_name_column_not_identifier(read: tuple[pd.DataFrame, Quarantine], csv_rows: pd.DataFrame) -> None:
    frame = read[1].frame().set_index("stage")
    cohort = read[1].frame().query("stage == 'cohort'")
    assert set(cohort["column"]) == {"md5hash"} and len(cohort) == len(NON_DERMATOLOGY_HASHES)
    assert cohort["reason"].str.contains("non-dermatology").all()
    # the md5hash is the patient id (and the image's file name): never quoted
    text = " ".join(read[1].frame()["reason"])
    assert not [h for h in csv_rows["md5hash"].dropna() if len(h) > 8 and h in text]
    assert frame.loc["contract", "column"] == "three_partition_label"
    assert "three_partition_label" in frame.loc["contract", "reason"] and "empty" in frame.loc["contract", "reason"]
    assert frame.loc["dedupe", "column"] == "md5hash" and "first row is kept" in frame.loc["dedupe", "reason"]


def test_labels_split_and_patients(read: tuple[pd.DataFrame, Quarantine], csv_rows: pd.DataFrame) -> None:
    records, _ = read
    src = csv_rows.set_index("_source_row").loc[records["_source_row"]]
    y = records[LABELS].to_numpy()
    assert y.dtype == np.float64 and (y.sum(axis=1) == 1).all()
    expected = src["three_partition_label"].map({"non-neoplastic": 0, "malignant": 1, "benign": 2}).to_numpy()
    assert (y.argmax(axis=1) == expected).all()
    # split: qc == "1 Diagnostic" -> test, everything else (other qc values, empty) -> train
    is_test = (src["qc"] == "1 Diagnostic").to_numpy()
    assert is_test.sum() > 0 and (~is_test).sum() > 0
    assert ((records["split"] == "test").to_numpy() == is_test).all()
    assert set(src.loc[~is_test, "qc"]) - {""}  # non-diagnostic qc values exist and stay in train
    # one patient per image: the md5hash
    assert (records["raw_patient_id"].to_numpy() == src["md5hash"].to_numpy()).all()
    assert records["raw_patient_id"].is_unique


def test_subgroups(read: tuple[pd.DataFrame, Quarantine], csv_rows: pd.DataFrame) -> None:
    records, _ = read
    src = csv_rows.set_index("_source_row").loc[records["_source_row"]]
    expected = (
        src["fitzpatrick_scale"]
        .map(
            {
                "1": "Type I/II",
                "2": "Type I/II",
                "3": "Type III/IV",
                "4": "Type III/IV",
                "5": "Type V/VI",
                "6": "Type V/VI",
            }
        )
        .fillna("Unknown")
    )
    assert (records["skin_type"].to_numpy() == expected.to_numpy()).all()
    assert set(records["skin_type"]) == {"Type I/II", "Type III/IV", "Type V/VI", "Unknown"}
    unknown = records["skin_type"] == "Unknown"
    assert set(src.loc[unknown.to_numpy(), "fitzpatrick_scale"]) == {"-1", ""}  # -1 and missing both Unknown
    assert (records["disease"].to_numpy() == src["nine_partition_label"].to_numpy()).all()
    assert records[["skin_type", "disease"]].notna().all().all()


def test_decode(raw: Path, read: tuple[pd.DataFrame, Quarantine], truth: pd.DataFrame) -> None:
    records, _ = read
    chunk = get_dataset("fitzpatrick").decode_inputs(records, raw)
    n_fail = len(chunk.failures)
    assert chunk.x.shape == (len(records) - n_fail, 3, 64, 64) and chunk.x.dtype == np.float32
    assert chunk.x.min() >= -1.0 and chunk.x.max() <= 1.0 and chunk.x.std() > 0.05
    failed_rows = set(records.loc[list(chunk.failures), "_source_row"])
    assert failed_rows == set(truth.loc[truth["fate"] == "decode", "source_row"])
    reasons = " | ".join(chunk.failures.values())
    for needle in ("listed but missing", "truncated", "'CMYK'", "cannot identify"):
        assert needle in reasons
    gray = truth.loc[truth["plant"] == "grayscale_jpeg", "source_row"].item()
    pos = records.index[records["_source_row"] == gray].item()
    assert pos in set(chunk.ok_positions)  # a single-channel JPEG is replicated to RGB, not rejected
    # channel-first RGB: the three channels of the grayscale image are equal
    img = chunk.x[list(chunk.ok_positions).index(pos)]
    assert np.allclose(img[0], img[1]) and np.allclose(img[1], img[2])


def test_images_subfolder_layout(raw: Path, read: tuple[pd.DataFrame, Quarantine], tmp_path: Path) -> None:
    records, _ = read
    alt = tmp_path / "raw"
    (alt / "images").mkdir(parents=True)
    shutil.copy(raw / CSV, alt / CSV)
    for jpg in raw.glob("*.jpg"):
        shutil.copy(jpg, alt / "images" / jpg.name)
    adapter = get_dataset("fitzpatrick")
    sub = records.iloc[:30]
    a, b = adapter.decode_inputs(sub, raw), adapter.decode_inputs(sub, alt)
    assert (a.ok_positions == b.ok_positions).all() and np.array_equal(a.x, b.x)


def test_snapshot_reconciles(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, truth: pd.DataFrame) -> None:
    monkeypatch.setenv("MEDAUDIT_SECRET_FILE", str(tmp_path / "secret"))
    snap = build_snapshot(get_dataset("fitzpatrick"), raw, tmp_path / "results", secret=b"k" * 32)
    q = snap.quarantine()
    assert snap.n_raw == N + 1 == snap.n_accepted + snap.n_quarantined
    assert snap.n_accepted == (truth["fate"] == "accepted").sum()
    assert q["stage"].value_counts().to_dict() == {"decode": 4, "cohort": 3, "contract": 1, "dedupe": 1}
    assert snap.inputs().shape == (snap.n_accepted, 3, 64, 64)
    assert "raw_patient_id" not in snap.records.columns
    assert not set(snap.records["patient_key"]) & set(truth["md5hash"])  # pseudonymous keys only


def test_exclude_hashes_option(raw: Path, read: tuple[pd.DataFrame, Quarantine]) -> None:
    kept = get_dataset("fitzpatrick", {"exclude_hashes": []}).read_records(raw, Quarantine())
    assert len(kept) == len(read[0]) + 3
    assert set(NON_DERMATOLOGY_HASHES) <= set(kept["raw_patient_id"])
    with pytest.raises(ConfigError, match="exclude_hashes"):
        get_dataset("fitzpatrick", {"exclude_hashes": "2ea034fc482e9bd21a5dfa2506cc5d6b"})


def test_missing_column_is_structural(raw: Path, tmp_path: Path) -> None:
    df = pd.read_csv(raw / CSV, dtype=str, keep_default_na=False)
    df.drop(columns=["three_partition_label"]).to_csv(tmp_path / CSV, index=False)
    with pytest.raises(StructuralError) as err:
        get_dataset("fitzpatrick").read_records(tmp_path, Quarantine())
    assert err.value.column == "three_partition_label" and CSV in str(err.value)
    assert "three_partition_label" in str(err.value)


def test_writer_without_awkward_rows_gives_one_image_per_row(tmp_path: Path) -> None:
    write = get_synthetic_writer("fitzpatrick")
    clean = write(tmp_path / "clean", 30, seed=0, awkward=False)
    assert len(pd.read_csv(clean)) == 30 and len(list((tmp_path / "clean").glob("*.jpg"))) == 30


def test_atypical_presentations_change_only_their_own_images(tmp_path: Path) -> None:
    """Atypical rows keep their CSV row (label included) and are drawn from a generator of their own,
    so every other file is byte-identical to a cohort written without them."""
    write = get_synthetic_writer("fitzpatrick")
    plain, with_atypical = write(tmp_path / "a", 60, seed=5, atypical=0.0), write(tmp_path / "b", 60, seed=5, atypical=0.1)
    assert plain.read_bytes() == with_atypical.read_bytes()  # the CSV
    truth = pd.read_csv(with_atypical.parent / "_synthetic_truth.csv", keep_default_na=False)
    atypical = truth[truth["plant"] == "atypical_presentation"]
    unplanted = (truth["plant"] == "").sum() + len(atypical)
    assert len(atypical) == round(0.1 * unplanted) > 0 and set(atypical["fate"]) == {"accepted"}
    for md5 in truth.loc[truth["fate"] == "accepted", "md5hash"]:
        same = (tmp_path / "a" / f"{md5}.jpg").read_bytes() == (tmp_path / "b" / f"{md5}.jpg").read_bytes()
        assert same != (md5 in set(atypical["md5hash"])), md5

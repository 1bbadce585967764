"""`medaudit init-dataset` proposes the right id, label and subgroup columns on the MIMIC-IV-ED and
Fitzpatrick17k tables (as the synthetic writers lay them out) and on the three own-data examples, writes
a spec that loads, and never prints a value of a column it takes for an identifier."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.cli import main
from tasks.datasets.spec import load_spec
from tasks.synthetic import get_synthetic_writer
from tasks.synthetic.own_data import write_clinic_visits, write_derm_images, write_ward_ecg


def _init(capsys: pytest.CaptureFixture[str], table: Path, out: Path, *extra: str) -> tuple[dict, str]:
    assert main(["init-dataset", str(table), "--out", str(out), *extra]) == 0
    captured = capsys.readouterr()
    load_spec(out)  # what it writes is a valid spec
    return yaml.safe_load(out.read_text()), captured.out + captured.err


def _identifier_values(table: Path, columns: list[str]) -> set[str]:
    df = pd.read_parquet(table) if table.suffix == ".parquet" else pd.read_csv(table, dtype=str)
    return {str(v) for c in columns for v in df[c].dropna().unique()}


def test_mimic_iv_ed_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    get_synthetic_writer("mimic-iv-ed")(raw, 120, 0)
    spec, printed = _init(capsys, raw / "master_dataset.csv", tmp_path / "ed.yaml")
    assert (spec["patient_id"], spec["record_id"]) == ("subject_id", "stay_id")
    assert spec["label"] == {"kind": "binary", "column": "outcome_hospitalization", "positive": ["True"], "negative": ["False"]}
    assert {sg["column"] for sg in spec["subgroups"].values()} == {"gender", "race", "insurance", "age"}
    assert {"hadm_id", "intime"} <= set(spec["identifiers"])
    features = {f["column"] for f in spec["inputs"]["features"]}
    assert {"triage_sbp", "cci_Cancer1", "n_ed_30d"} <= features and not features & {
        "subject_id",
        "stay_id",
        "hadm_id",
        "outcome_hospitalization",
    }
    secret = _identifier_values(raw / "master_dataset.csv", ["subject_id", "stay_id", "hadm_id"])
    text = printed + (tmp_path / "ed.yaml").read_text()
    assert not [v for v in secret if v in text]


def test_fitzpatrick_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    get_synthetic_writer("fitzpatrick")(raw, 60, 0)
    spec, printed = _init(capsys, raw / "fitzpatrick17k.csv", tmp_path / "fitz.yaml", "--images-root", str(raw))
    assert (spec["patient_id"], spec["record_id"]) == ("md5hash", "md5hash")
    assert spec["label"]["kind"] == "multiclass" and spec["label"]["column"] == "three_partition_label"
    assert {"fitzpatrick_scale", "nine_partition_label"} <= {sg["column"] for sg in spec["subgroups"].values()}
    assert spec["inputs"]["kind"] == "image" and spec["inputs"]["path"] == "{md5hash}.jpg"
    assert spec["split"] == {"column": "qc", "test_values": ["1 Diagnostic"]}
    assert {"url", "url_alphanum"} <= set(spec["identifiers"])
    secret = _identifier_values(raw / "fitzpatrick17k.csv", ["md5hash", "url", "url_alphanum"])
    secret |= {v[:8] for v in secret}  # not even the 8-character prefix the URLs carry
    text = printed + (tmp_path / "fitz.yaml").read_text()
    assert not [v for v in secret if v in text]


def test_own_data_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clinic = write_clinic_visits(tmp_path / "clinic", 30)
    spec, printed = _init(capsys, clinic["raw"] / "visits.csv", tmp_path / "c.yaml")
    assert (spec["patient_id"], spec["record_id"], spec["label"]["column"]) == ("mrn", "visit_id", "admitted_30d")
    assert "note" in spec["identifiers"]  # free text naming the patient
    derm = write_derm_images(tmp_path / "derm", 20)
    spec, printed2 = _init(capsys, derm["raw"] / "manifest.csv", tmp_path / "d.yaml", "--images-root", str(derm["raw"] / "images"))
    assert (spec["patient_id"], spec["record_id"], spec["label"]["column"]) == ("patient", "image_file", "lesion")
    assert spec["inputs"] == {"kind": "image", "path": "{image_file}", "root": "images", "size": [64, 64], "channels": 3}
    assert spec["split"]["column"] == "partition"
    ecg = write_ward_ecg(tmp_path / "ecg", 20)
    spec, printed3 = _init(capsys, ecg["raw"] / "ecg_index.parquet", tmp_path / "e.yaml", "--images-root", str(ecg["raw"] / "signals"))
    assert (spec["patient_id"], spec["record_id"]) == ("subject", "ecg_id")
    assert spec["inputs"] == {"kind": "signal", "path": "{ecg_id}.npy", "root": "signals", "format": "numpy", "shape": [2, 128]}
    assert "device_serial" in spec["identifiers"]
    text = printed + printed2 + printed3 + "".join((tmp_path / f).read_text() for f in ("c.yaml", "d.yaml", "e.yaml"))
    assert not [i for i in clinic["ids"] | derm["ids"] | ecg["ids"] if i in text]


def test_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clinic = write_clinic_visits(tmp_path / "clinic", 10)
    out = tmp_path / "spec.yaml"
    out.write_text("mine")
    assert main(["init-dataset", str(clinic["raw"] / "visits.csv"), "--out", str(out)]) == 2
    assert f"{out} exists; give --out elsewhere or --force to overwrite it" in capsys.readouterr().err
    assert out.read_text() == "mine"

"""Three datasets declared only by spec (docs/examples/own_data/), end to end through the CLI as a user
runs it: `ingest --spec`, `audit --spec --models 8` and `audit-model --spec` on a model trained outside
medaudit (exported logits), then the subgroup tables by the declared attributes and an identifier scan
of everything written or printed.

The tabular dataset runs in the default suite; the image and signal ones (same path, a conv net) are
heavy. Pools are tiny (8 models, 1-3 epochs): this checks the plumbing, not the privacy numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from flows.cli import main
from tasks.config import TrainRecipe
from tasks.datasets import get_dataset
from tasks.datasets.quarantine import Quarantine
from tasks.synthetic.own_data import EXAMPLES, write_clinic_visits, write_derm_images, write_ward_ecg
from tasks.training.shadow import score_model, train_model

# The spec's `quick` recipe preset (tasks/datasets/spec.py defaults; derm_images.yaml overrides it), cut
# to 1-3 epochs on the command line: the pool comes from the dataset, as with a built-in one.
EPOCHS = {"clinic_visits": 3, "derm_images": 1, "ecg_signals": 1}
WRITERS = {"clinic_visits": write_clinic_visits, "derm_images": write_derm_images, "ecg_signals": write_ward_ecg}


def _cli(capsys: pytest.CaptureFixture[str], log: list[str], *args: str) -> str:
    code = main(list(args))
    out = capsys.readouterr()
    log += [out.out, out.err]
    assert code == 0, out.err
    return out.out


def _target_model(spec: Path, raw: Path, root: Path, epochs: int) -> tuple[Path, Path, int]:
    """A model 'the team already trained': fitted on half of the training patients, outside medaudit.
    Returns its exported logits, its members file (raw patient ids) and its number of member records."""
    adapter = get_dataset(f"spec:{spec}")
    rec = adapter.read_records(raw, Quarantine())
    chunk = adapter.decode_inputs(rec, raw)
    rec = rec.loc[chunk.ok_positions].reset_index(drop=True)
    x = chunk.x
    members = rec.loc[rec["split"] == "train", "raw_patient_id"].drop_duplicates().sample(frac=0.5, random_state=1)
    member = rec["raw_patient_id"].isin(set(members)).to_numpy()
    mu, sd = x[member].mean(0), x[member].std(0)
    xs = ((x - mu) / np.where(sd > 0, sd, 1)).astype(np.float32)
    y = rec[[c for c in rec.columns if c.startswith("y_")]].to_numpy()
    pool = adapter.default_pools["quick"]
    arch, recipe = pool["architecture"], TrainRecipe(**{**pool["recipe"], "epochs": epochs})
    model, _ = train_model(xs[member], y[member], adapter.task, arch["name"], arch["params"], recipe, seed=5)
    logits = score_model(model.eval(), xs, adapter.task, 1, 0)[:, 0, :]
    frame = pd.DataFrame({"source_file": rec["_source_file"], "source_row": rec["_source_row"]})
    for k in range(logits.shape[1]):
        frame[f"logit_{k}"] = logits[:, k]
    frame.to_parquet(root / "logits.parquet", index=False)
    pd.DataFrame({"patient_id": members.to_numpy()}).to_csv(root / "members.csv", index=False)
    return root / "logits.parquet", root / "members.csv", int(member.sum())


def _run_spec_dataset(name: str, n_patients: int, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = EXAMPLES / f"{name}.yaml"
    declared = list(yaml.safe_load(spec.read_text())["subgroups"])
    info = WRITERS[name](tmp / "raw", n_patients)
    raw, results = info["raw"], tmp / "results"
    log: list[str] = []
    run = ["--results", str(results), "--recipe", "quick", "--epochs", str(EPOCHS[name]), "--no-progress", "--json", "--workers", "1"]

    out = _cli(capsys, log, "ingest", "--spec", str(spec), str(raw), "--results", str(results))
    assert f"{info['n_rows']} raw rows" in out
    audit = json.loads(_cli(capsys, log, "audit", "--spec", str(spec), str(raw), "--models", "8", *run))
    assert audit["headline"]["n_models"] == 8 and audit["n_accepted"] + audit["n_quarantined"] == audit["n_raw"]
    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as db:
        preset = db.execute("SELECT recipe_preset FROM pools").fetchone()[0]
    assert preset == "quick (modified)"  # the spec's preset, epochs cut on the command line

    logits, members, n_member_records = _target_model(spec, raw, tmp, EPOCHS[name])
    target = json.loads(
        _cli(
            capsys,
            log,
            "audit-model",
            "--spec",
            str(spec),
            str(raw),
            "--logits",
            str(logits),
            "--members",
            str(members),
            "--models",
            "8",
            # the few-epoch team model stays far below a logistic regression on these features, so the sanity
            # gate (tasks/audit/model_sanity.py) would stop the audit; this test is about the spec path, so force it
            "--force",
            *run,
        )
    )
    assert target["headline"]["n_member_records"] == n_member_records
    assert target["headline"]["trained"] == 0  # the audit's 8 models are the references (same pool key)

    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as db:
        attrs = {r[0] for r in db.execute("SELECT DISTINCT attribute FROM subgroup_risk WHERE level = 'patient'").fetchall()}
        assert set(declared) <= attrs, (declared, attrs)
        tables = [r[0] for r in db.execute("SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'").fetchall()]
        dumped = {t: db.execute(f'SELECT * FROM "{t}"').df().astype(str).to_csv() for t in tables}
        stored = db.execute("SELECT attributes FROM model_audit_patient_stats LIMIT 1").fetchone()[0]
    assert set(json.loads(stored) if isinstance(stored, str) else stored) == set(declared)
    # the model audit's subgroup table (cells under report.min_cell patients are suppressed in the report)
    target_groups = pd.read_csv(next((results / "reports").rglob("model-*/subgroup_risk.csv")))
    assert set(target_groups["attribute"]) <= attrs

    # identifier scan: printed output, quarantine, every DuckDB table, every report and snapshot file
    texts = {"stdout/stderr": "\n".join(log), **dumped}
    for f in results.rglob("*"):
        if f.is_file() and f.suffix in {".csv", ".html", ".json", ".md", ".txt"}:
            texts[str(f)] = f.read_text(errors="ignore")
        elif f.is_file() and f.suffix == ".parquet":
            texts[str(f)] = pd.read_parquet(f).astype(str).to_csv()
    assert any("quarantine" in k for k in texts)
    leaks = {where: sorted(i for i in info["ids"] if i in text)[:3] for where, text in texts.items()}
    assert not {k: v for k, v in leaks.items() if v}


@pytest.mark.slow
def test_tabular_spec_two_joined_tables_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run_spec_dataset("clinic_visits", 60, tmp_path, capsys)


@pytest.mark.heavy
def test_image_folder_with_manifest_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run_spec_dataset("derm_images", 40, tmp_path, capsys)


@pytest.mark.heavy
def test_numpy_signals_listed_in_parquet_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run_spec_dataset("ecg_signals", 40, tmp_path, capsys)

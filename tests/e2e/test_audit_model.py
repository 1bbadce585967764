"""`medaudit audit-model`: an existing model (TorchScript, state dict or exported logits) audited with
few reference models; its members stand out from its non-members, and the three inputs agree."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from flows.cli import main
from tasks.attacks.lira import few_reference_lira
from tasks.config import TrainRecipe
from tasks.datasets import get_dataset
from tasks.datasets.quarantine import Quarantine
from tasks.errors import StructuralError
from tasks.risk.model_audit import model_patient_risk
from tasks.synthetic.mimic_iv_ed import write_ed_cohort
from tasks.training.shadow import score_model, train_model

ARCH = {"name": "mlp", "params": {"width": 128, "depth": 2}}
RECIPE = {"epochs": 30, "batch_size": 64, "learning_rate": 0.02, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A synthetic ED cohort, a model trained outside medaudit on half of its training patients, and
    that model saved three ways (TorchScript, state dict, exported logits) with its members file."""
    root = tmp_path_factory.mktemp("audit_model")
    raw = root / "raw"
    write_ed_cohort(raw, 400, seed=3)
    adapter = get_dataset("mimic-iv-ed")
    rec = adapter.read_records(raw, Quarantine())
    x = adapter.decode_inputs(rec, raw).x
    train_patients = rec.loc[rec["split"] == "train", "raw_patient_id"].drop_duplicates()
    members = train_patients.sample(frac=0.5, random_state=1)
    member = rec["raw_patient_id"].isin(set(members)).to_numpy()
    # standardised in float64 as medaudit feeds --model (tasks/audit/model_inputs.py), so the exported logits
    # come from exactly the inputs the other three ways see
    x = x.astype(np.float64)
    mu, sd = x[member].mean(0), x[member].std(0)
    xs = ((x - mu) / np.where(sd > 0, sd, 1)).astype(np.float32)
    y = rec[["y_outcome_hospitalization"]].to_numpy()
    model, _ = train_model(xs[member], y[member], adapter.task, ARCH["name"], ARCH["params"], TrainRecipe(**RECIPE), seed=11)
    model.eval()
    torch.jit.trace(model, torch.from_numpy(xs[:4])).save(str(root / "model.pt"))
    batch = {0: torch.export.Dim("batch", min=2)}
    torch.export.save(torch.export.export(model, (torch.from_numpy(xs[:4]),), dynamic_shapes=(batch,)), str(root / "model.pt2"))
    torch.save({"state_dict": model.state_dict()}, root / "model_state.pt")
    logits = score_model(model, xs, adapter.task, 1, 0)[:, 0, :]
    frame = rec[["_source_file", "_source_row"]].rename(columns=lambda c: c.lstrip("_")).assign(logit_0=logits[:, 0])
    frame["source_file"] = frame["source_file"].map(lambda s: Path(s).name)
    frame.to_parquet(root / "logits.parquet", index=False)
    pd.DataFrame({"patient_id": members.to_numpy()}).to_csv(root / "members.csv", index=False)
    config = root / "pool.json"
    config.write_text(json.dumps({"dataset": "mimic-iv-ed", "raw_dir": str(raw), "pool": {"architecture": ARCH, "recipe": RECIPE}}))
    common = ["--members", str(root / "members.csv"), "--models", "8", "--config", str(config), "--results", str(root / "results")]
    return {"root": root, "raw": raw, "common": common, "n_records": len(rec), "n_members": int(member.sum())}


def _run(trained: dict, capsys: pytest.CaptureFixture[str], *source: str) -> dict:
    args = ["audit-model", "mimic-iv-ed", str(trained["raw"]), *source, *trained["common"], "--no-progress", "--json"]
    assert main(args) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


@pytest.mark.slow
def test_audit_model_finds_its_members_and_the_three_inputs_agree(trained: dict, capsys: pytest.CaptureFixture[str]) -> None:
    root = trained["root"]
    ts = _run(trained, capsys, "--model", str(root / "model.pt"))
    h = ts["headline"]
    assert h["trained"] == 8 and h["n_references"] == 8 and h["target_kind"] == "torchscript"
    assert h["n_member_records"] == trained["n_members"] and h["n_records"] == trained["n_records"]
    # a 30-epoch MLP memorises: its members are told apart from its non-members, and more member
    # patients reach high risk than chance (the non-member rate) predicts
    assert h["lira_offline_auc"] > 0.6
    assert h["n_member_patients_at_risk"] > 1.5 * h["expected_by_chance"] + 5
    # the same model as a state dict + registry architecture, and as exported logits: same risks
    sd = _run(trained, capsys, "--model", str(root / "model_state.pt"), "--arch", "mlp:width=128:depth=2")
    lg = _run(trained, capsys, "--logits", str(root / "logits.parquet"))
    ex = _run(trained, capsys, "--model", str(root / "model.pt2"))
    assert sd["headline"]["trained"] == 0 and lg["headline"]["trained"] == 0  # references reused
    assert sd["headline"]["target_kind"] == "state_dict" and lg["headline"]["target_kind"] == "logits"
    assert ex["headline"]["target_kind"] == "torch_export"
    db = Path(ts["db_path"])
    with duckdb.connect(str(db), read_only=True) as con:
        risks = {
            a: con.sql("SELECT risk FROM model_audit_record_risk WHERE audit_id = ? ORDER BY record_idx", params=[a]).fetchnumpy()["risk"]
            for a in (ts["audit_id"], sd["audit_id"], lg["audit_id"], ex["audit_id"])
        }
        summary = con.sql("SELECT * FROM model_audit_summary WHERE audit_id = ?", params=[ts["audit_id"]]).df()
        pats = con.sql("SELECT * FROM model_audit_patient_risk WHERE audit_id = ?", params=[ts["audit_id"]]).df()
    np.testing.assert_allclose(risks[sd["audit_id"]], risks[ts["audit_id"]], rtol=1e-5)
    np.testing.assert_allclose(risks[lg["audit_id"]], risks[ts["audit_id"]], rtol=1e-5)
    np.testing.assert_allclose(risks[ex["audit_id"]], risks[ts["audit_id"]], rtol=1e-5)
    assert set(summary["attack"]) == {"lira_offline", "rmia_offline", "loss"} and set(summary["level"]) == {"record", "patient"}
    assert pats["member"].sum() == h["n_member_patients"] and pats["patient_key"].str.len().eq(20).all()
    report = Path(ts["files"]["report_html"])
    assert report.exists() and (report.parent.stat().st_mode & 0o077) == 0
    assert Path(ts["files"]["risk_png"]).stat().st_size > 10_000
    # no raw id in the exported patient table
    raw_ids = set(pd.read_csv(root / "members.csv")["patient_id"].astype(str))
    assert not raw_ids & set(pd.read_csv(ts["files"]["patient_csv"])["patient_key"].astype(str))


def test_members_file_errors_name_file_column_and_line(trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "members.csv"
    bad.write_text("patient_id\n999999991\n999999992\n")
    args = ["audit-model", "mimic-iv-ed", str(trained["raw"]), "--logits", str(trained["root"] / "logits.parquet")]
    args += ["--members", str(bad), "--results", str(tmp_path / "r"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "members.csv" in err and "patient_id" in err and "lines [2, 3]" in err and "999999991" not in err
    bad.write_text("subject\n1\n")
    assert main(args) == 2
    assert "patient_id" in capsys.readouterr().err


def test_logits_file_errors(trained: dict, tmp_path: Path) -> None:
    from tasks.audit.model_loading import read_logits

    adapter = get_dataset("mimic-iv-ed")
    rec = adapter.read_records(trained["raw"], Quarantine()).rename(columns={"_source_file": "source_file", "_source_row": "source_row"})
    good = pd.read_parquet(trained["root"] / "logits.parquet")
    out = read_logits(trained["root"] / "logits.parquet", rec, adapter.task, 1)
    assert out.shape == (len(rec), 1, 1) and np.isfinite(out).all()
    cases = {
        "missing column": (good.drop(columns=["logit_0"]), "logit_0"),
        "not a number": (good.astype({"logit_0": object}).assign(logit_0=lambda d: d["logit_0"].where(d.index != 3, "high")), "row 5"),
        "unknown record": (good.assign(source_row=lambda d: d["source_row"] + 10**6), "name no accepted record"),
        "duplicate": (pd.concat([good, good.head(1)]), "appears twice"),
    }
    for what, (frame, needle) in cases.items():
        path = tmp_path / f"{what.replace(' ', '_')}.csv"
        frame.to_csv(path, index=False)
        with pytest.raises(StructuralError, match=needle):
            read_logits(path, rec, adapter.task, 1)


def test_target_risk_math_against_a_simulation() -> None:
    """Non-members' risk is close to uniform (with 64 references, and with only 4 OUT of 8); a member
    whose score sits 3 sds above the OUT mean gets risk near Phi(3)."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    n = 20_000
    mu = rng.normal(size=n)
    sigma = rng.uniform(0.5, 1.5, size=n)  # records differ in spread
    for m, n_in in ((64, 0), (8, 4)):
        ref = mu[None, :] + sigma[None, :] * rng.normal(size=(m, n))
        ref_in = np.zeros((m, n), dtype=bool)
        ref_in[:n_in] = True
        ref[:n_in] += 2.0  # IN references score higher; offline LiRA must ignore them
        target = mu + sigma * rng.normal(size=n)
        target[:20] = mu[:20] + 3.0 * sigma[:20]
        for variance in ("per_record", "fixed"):
            tr = few_reference_lira(target, ref, ref_in, variance=variance)
            risk = tr.risk[20:]
            assert abs(np.mean(risk) - 0.5) < 0.02, (m, variance)
            assert abs(np.quantile(risk, 0.9) - 0.9) < 0.03 and abs(np.quantile(risk, 0.99) - 0.99) < 0.01, (m, variance)
            if m == 64:
                np.testing.assert_allclose(np.median(tr.risk[:20]), norm.cdf(3.0), atol=0.03)
    assert few_reference_lira(target, ref, ref_in, variance="auto").variance == "fixed"  # 4 OUT per record
    # a patient's risk is the max over their member records only; non-member patients over all
    pat = model_patient_risk(np.array([0.2, 0.99, 0.7, 0.4]), np.array([True, False, False, False]), np.array([0, 0, 1, 1]), 2)
    assert pat["member"].tolist() == [True, False] and pat["risk"].tolist() == [0.2, 0.7]

"""`medaudit gate`: observed vs threshold for each check; exit 1 when exceeded, 0 when within, 2 on errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest

from tasks.storage.store import AuditStore


def _fake_audit(results: Path, audit_id: str, risks: list[float | None], aucs: list[float], tprs: list[float]) -> None:
    """A finished audit with hand-made patient risks and attack results (no training)."""
    with AuditStore(results / "medaudit.duckdb") as store:
        store.start_audit(audit_id, "pool1", "mimic-iv-ed", "v1", 8, len(aucs), {"dataset": "mimic-iv-ed"}, None)
        for i, r in enumerate(risks):
            store.con.execute(
                "INSERT INTO patient_stats (audit_id, pool_key, patient_key, n_records, n_scored, risk_max) "
                "VALUES (?, 'pool1', ?, 1, ?, ?)",
                [audit_id, f"p{i}", int(r is not None), r],
            )
        for t, (auc, tpr) in enumerate(zip(aucs, tprs, strict=True)):
            store.con.execute(
                "INSERT INTO attack_results (audit_id, pool_key, attack, attack_version, level, params, target_model, auc, tpr_at_fpr) "
                "VALUES (?, 'pool1', 'lira_online', '1', 'record', '{}', ?, ?, MAP([0.001, 0.01], [?, 0.1]))",
                [audit_id, t, auc, tpr],
            )
        store.finish_audit(audit_id, {"n_patients": len(risks)})


def test_gate_on_a_hand_made_audit(tmp_path: Path, helpers: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    # 10 patients, one unscored; 2 of the 9 scored have risk >= 0.9 (share 0.2222); AUC 0.55; TPR@1e-3 0.02
    _fake_audit(tmp_path, "a1", [0.95, 0.91, 0.6, 0.7, 0.55, 0.5, 0.8, 0.89, 0.6, None], [0.54, 0.56], [0.01, 0.03])
    code, out = helpers.run_cli(["gate", "--results", str(tmp_path), "--max-share-above", "0.2", "--max-lira-auc", "0.6"])
    assert code == 1, out
    assert "FAIL  share of patients with risk >= 0.9" in out and "0.2222" in out and "2 of 9 scored patients" in out
    assert "PASS  lira_online AUC" in out and "0.5500" in out
    code, out = helpers.run_cli(["gate", "--results", str(tmp_path), "--max-share-above", "0.25", "--max-tpr-at-1e-3", "0.05"])
    assert code == 0, out
    assert "gate passed" in out and "0.0200" in out
    # a different risk threshold is computed from the stored patient risks, not the audit's own threshold
    code, out = helpers.run_cli(["gate", "--results", str(tmp_path), "--risk", "0.8", "--max-share-above", "0.5", "--json"])
    report = json.loads(out)
    assert code == 0 and report["passed"] and report["checks"][0]["observed"] == pytest.approx(4 / 9)
    # no thresholds given: the default check (share above 0.9 at most 1%)
    code, out = helpers.run_cli(["gate", "--results", str(tmp_path)])
    assert code == 1 and "threshold <= 0.01" in out
    capsys.readouterr()


def test_gate_errors_exit_2(tmp_path: Path, helpers: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    assert helpers.run_cli(["gate", "--results", str(tmp_path / "nothing")])[0] == 2
    assert "no audit database" in capsys.readouterr().err
    _fake_audit(tmp_path, "a1", [0.95, 0.6], [], [])
    assert helpers.run_cli(["gate", "--results", str(tmp_path), "--dataset", "ptb-xl"])[0] == 2
    assert "no finished audit of ptb-xl" in capsys.readouterr().err
    # an audit without held-out targets cannot answer an attack threshold: an error, not a pass
    code, out = helpers.run_cli(["gate", "--results", str(tmp_path), "--max-lira-auc", "0.6"])
    assert code == 2 and "n/a" in out
    assert "no value for" in capsys.readouterr().err


def test_gate_never_writes(tmp_path: Path, helpers: SimpleNamespace) -> None:
    _fake_audit(tmp_path, "a1", [0.95, 0.6], [0.5], [0.0])
    db = tmp_path / "medaudit.duckdb"
    before = db.stat().st_mtime_ns, db.read_bytes()
    helpers.run_cli(["gate", "--results", str(tmp_path), "--max-share-above", "1"])
    assert (db.stat().st_mtime_ns, db.read_bytes()) == before


@pytest.mark.slow
@pytest.mark.heavy
def test_gate_on_a_real_audit(demo_audit: dict[str, Any], helpers: SimpleNamespace) -> None:
    results, audit_id = str(demo_audit["results"]), demo_audit["audit_id"]
    headline = demo_audit["result"]["headline"]
    # the 8-model pool is near chance (tests/flows/test_gate_evidence.py): judge its numbers regardless of evidence here
    strict = ["--max-share-above", "0.0", "--max-lira-auc", "0.5", "--max-tpr-at-1e-3", "0.0", "--min-evidence", "none"]
    code, out = helpers.run_cli(["gate", "--results", results, "--audit-id", audit_id, *strict, "--json"])
    assert code == 1, out
    report = json.loads(out)
    assert report["audit"]["audit_id"] == audit_id and not report["passed"]
    by_name = {c["name"]: c for c in report["checks"]}
    share = by_name["share of patients with risk >= 0.9"]
    assert share["observed"] == pytest.approx(headline["share_patients_above_threshold"]) and share["passed"] is False
    assert by_name["lira_online AUC"]["observed"] == pytest.approx(headline["lira_auc_mean"])
    assert by_name["lira_online TPR at FPR 1e-3"]["observed"] == pytest.approx(headline["lira_tpr_at_0.001"])

    lax = ["--max-share-above", "1", "--max-lira-auc", "1", "--max-tpr-at-1e-3", "1", "--min-evidence", "none"]
    code, out = helpers.run_cli(["gate", "--results", results, "--audit-id", audit_id, *lax])
    assert code == 0, out
    assert out.count("PASS") == 3 and "gate passed" in out
    # read-only: a writer could still open the database afterwards
    duckdb.connect(str(demo_audit["results"] / "medaudit.duckdb")).close()


def test_gate_rejects_an_unknown_attack(tmp_path: Path, helpers: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_audit(tmp_path, "a1", [0.95, 0.6], [0.5], [0.0])
    assert helpers.run_cli(["gate", "--results", str(tmp_path), "--attack", "lira_onlien", "--max-lira-auc", "0.6"])[0] == 2
    err = capsys.readouterr().err
    assert "--attack lira_onlien: unknown attack" in err and "lira_online" in err

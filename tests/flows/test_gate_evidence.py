"""A near-chance pool: the headline separates raw, chance and FDR-controlled counts, and `medaudit gate`
exits 2 "not enough evidence" instead of failing (or passing) on noise (docs/STATISTICS.md)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tasks.storage.store import AuditStore, read_only_query


def test_gate_exits_2_without_enough_evidence(tmp_path: Path, helpers: SimpleNamespace) -> None:
    # a hand-made audit whose headline says the evidence is insufficient: no pass, no fail, exit 2
    reason = "not enough evidence at 8 models: chance alone would flag about 55.0 of the 59 patients at risk >= 0.9 (93%)"
    with AuditStore(tmp_path / "medaudit.duckdb") as store:
        store.start_audit("a1", "pool1", "mimic-iv-ed", "v1", 8, 0, {"dataset": "mimic-iv-ed"}, None)
        for i, r in enumerate([0.95, 0.6, 0.7]):
            store.con.execute(
                "INSERT INTO patient_stats (audit_id, pool_key, patient_key, n_records, n_scored, risk_max) "
                "VALUES ('a1', 'pool1', ?, 1, 1, ?)",
                [f"p{i}", r],
            )
        store.finish_audit("a1", {"n_patients": 3, "evidence": "insufficient", "evidence_reason": reason})
    code, out = helpers.run_cli(["gate", "--results", str(tmp_path), "--max-share-above", "0.5"])
    assert code == 2 and "not enough evidence" in out and "55.0 of the 59" in out and "gate passed" not in out
    code, out = helpers.run_cli(["gate", "--results", str(tmp_path), "--max-share-above", "0.5", "--min-evidence", "none"])
    assert code == 0 and "gate passed" in out


@pytest.mark.heavy  # a real 8-model demo audit (1-2 minutes alone); the fixture is shared with the other heavy ops tests
def test_near_chance_pool_gives_no_verdict(demo_audit: dict[str, Any], helpers: SimpleNamespace) -> None:
    # 400 synthetic ED patients, 8 shadow models (tests/conftest.py): aggregate LiRA AUC about 0.5
    h = demo_audit["result"]["headline"]
    results, audit_id = str(demo_audit["results"]), demo_audit["audit_id"]
    assert h["evidence"] == "insufficient" and "not enough evidence at 8 models" in h["evidence_reason"]
    assert h["n_patients_above_threshold"] >= 10  # noise clears the raw threshold ...
    assert h["n_patients_expected_by_chance"] >= 0.5 * h["n_patients_above_threshold"]  # ... about as often as chance predicts
    assert h["n_patients_at_risk"] <= 2  # and the FDR rule keeps (almost) none of it
    assert h["fdr"] == 0.05 and (h["n_models_needed"] is None or h["n_models_needed"] > 8)

    code, out = helpers.run_cli(["gate", "--results", results, "--audit-id", audit_id])
    assert code == 2, out
    assert "not enough evidence" in out and "FAILED" not in out
    code, out = helpers.run_cli(["gate", "--results", results, "--audit-id", audit_id, "--json"])
    report = json.loads(out)
    assert code == 2 and report["passed"] is False and report["evidence"]["evidence"] == "insufficient"
    # asked to judge the numbers anyway, the raw share fails as before
    code, _ = helpers.run_cli(["gate", "--results", results, "--audit-id", audit_id, "--min-evidence", "none"])
    assert code == 1

    db = demo_audit["results"] / "medaudit.duckdb"
    pats = read_only_query(
        db,
        "SELECT count(*) FILTER (WHERE at_risk) AS n, count(*) FILTER (WHERE swap_q IS NULL AND risk IS NOT NULL) AS no_q "
        f"FROM patient_risk WHERE audit_id = '{audit_id}'",
    )
    assert int(pats["n"][0]) == h["n_patients_at_risk"] and int(pats["no_q"][0]) == 0
    hist = read_only_query(
        db, f"SELECT evidence, n_patients_at_risk, n_patients_expected_by_chance FROM audit_history WHERE audit_id = '{audit_id}'"
    )
    assert hist["evidence"][0] == "insufficient"
    sub = read_only_query(
        db, f"SELECT n_at_risk, expected_above FROM subgroup_risk WHERE audit_id = '{audit_id}' AND level = 'patient' AND NOT suppressed"
    )
    assert len(sub) and sub["expected_above"].notna().all()

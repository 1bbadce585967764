"""A near-chance pool: the headline separates raw, chance and FDR-controlled counts, and `medaudit gate`
exits 2 "not enough evidence" instead of failing (or passing) on noise (docs/STATISTICS.md)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from tasks.storage import read_only_query


@pytest.mark.slow
def test_near_chance_pool_gives_no_verdict(demo_audit: dict[str, Any], helpers: SimpleNamespace) -> None:
    # 400 synthetic ED patients, 8 shadow models (tests/ops/conftest.py): aggregate LiRA AUC about 0.5
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

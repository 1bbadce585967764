"""`medaudit compare`: which patients and groups became exposed between two audits of the same patients."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from scipy.stats import binom

from tasks.risk.compare import mcnemar_exact
from tasks.storage.store import AuditStore

N = 300
PLANTED = [f"k{i:03d}" for i in range(0, 36, 3)]  # 12 patients of the rare group, exposed after the retrain


def _store_audit(store: AuditStore, audit_id: str, risks: dict[str, float], attrs: dict[str, dict[str, str]], headline: dict) -> None:
    store.start_audit(audit_id, "pool-" + audit_id, "mimic-iv-ed", "v1", 8, 2, {"report": {"min_cell": 10}}, None)
    for key, risk in risks.items():
        store.con.execute(
            "INSERT INTO patient_stats (audit_id, pool_key, patient_key, n_records, n_scored, risk_max, attributes) "
            "VALUES (?, ?, ?, 1, 1, ?, MAP(?, ?))",
            [audit_id, "pool-" + audit_id, key, risk, list(attrs[key]), list(attrs[key].values())],
        )
    store.finish_audit(audit_id, headline)


@pytest.fixture
def two_audits(tmp_path: Path) -> dict[str, Any]:
    """Audit A and a retrained audit B of the same 300 patients: B exposes the 12 planted patients of the
    rare group; elsewhere risks move by noise only (3 patients cross the threshold each way)."""
    rng = np.random.default_rng(0)
    keys = [f"k{i:03d}" for i in range(N)]
    attrs = {k: {"race": "Rare" if i < 36 else ("White" if i % 2 else "Black"), "sex": "F" if i % 5 else "M"} for i, k in enumerate(keys)}
    attrs["k299"]["race"] = "Tiny"  # a group of one patient: suppressed
    risk_a = {k: float(rng.uniform(0.5, 0.85)) for k in keys}
    for k in ("k100", "k101", "k102"):
        risk_a[k] = 0.95  # at risk in A only (noise)
    risk_b = {k: min(v + float(rng.normal(0, 0.01)), 0.88) for k, v in risk_a.items()}
    for k in ("k100", "k101", "k102"):
        risk_b[k] = 0.7
    for k in ("k200", "k201", "k202"):
        risk_b[k] = 0.93  # at risk in B only (noise)
    for k in PLANTED:
        risk_b[k] = 0.98
    results = tmp_path / "results"
    with AuditStore(results / "medaudit.duckdb") as store:
        _store_audit(store, "auditA", risk_a, attrs, {"risk_threshold": 0.9, "n_patients": N, "n_patients_above_threshold": 3})
        _store_audit(
            store,
            "auditB",
            risk_b,
            attrs,
            {"risk_threshold": 0.9, "n_patients": N, "n_patients_above_threshold": 15, "n_patients_at_risk": 12},
        )
    return {"results": results}


def test_mcnemar_exact_matches_the_binomial() -> None:
    assert mcnemar_exact(12, 0) == pytest.approx(2 * 0.5**12)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(7, 2) == pytest.approx(min(1.0, 2 * binom.sf(6, 9, 0.5)))


def test_compare_lists_the_planted_patients_as_newly_at_risk(two_audits: dict[str, Any], helpers: SimpleNamespace) -> None:
    results = str(two_audits["results"])
    code, out = helpers.run_cli(["compare", "auditA", "auditB", "--results", results, "--json"])
    assert code == 0, out
    doc = json.loads(out)
    assert sorted(doc["newly_at_risk"]) == sorted([*PLANTED, "k200", "k201", "k202"])
    assert sorted(doc["no_longer_at_risk"]) == ["k100", "k101", "k102"]
    assert doc["counts"]["newly at risk"] == 15
    rows = {(r["attribute"], r["group"]): r for r in doc["subgroups"]}
    rare = rows[("race", "Rare")]
    assert rare["newly_at_risk"] == 12 and rare["no_longer_at_risk"] == 0 and rare["p_value"] == pytest.approx(2 * 0.5**12)
    assert rare["p_holm"] < 0.01 and rare["share_change"] == pytest.approx(12 / 36)
    assert doc["subgroups"][0]["group"] == "Rare", "sorted by significance"
    assert rows[("race", "White")]["p_value"] > 0.05  # noise moves patients both ways
    tiny = rows[("race", "Tiny")]
    assert tiny["suppressed"] and tiny["patients"] is None and tiny["newly_at_risk"] is None
    deltas = {r["measure"]: r for r in doc["headline"]}
    assert deltas["patients with risk >= threshold"]["change"] == 12
    assert deltas["patients at risk beyond chance (FDR)"]["audit_a"] is None  # read with .get: absent in A

    code, out = helpers.run_cli(["compare", "auditA", "auditB", "--results", results])
    assert code == 0 and "15 newly at risk, 3 no longer at risk" in out
    assert "suppressed (n < 10)" in out and out.index("Rare") < out.index("White")
    assert PLANTED[0] in out


def test_compare_view_in_sql(two_audits: dict[str, Any], helpers: SimpleNamespace) -> None:
    results = str(two_audits["results"])
    sql = "SELECT patient_key FROM compare_audits('auditA', 'auditB') WHERE change = 'newly at risk' ORDER BY patient_key"
    code, out = helpers.run_cli(["sql", "--results", results, sql])
    assert code == 0 and out.split()[1:] == sorted([*PLANTED, "k200", "k201", "k202"])
    code, out = helpers.run_cli(
        ["sql", "--results", results, "SELECT newly_at_risk FROM compare_subgroups('auditA', 'auditB') WHERE \"group\" = 'Rare'"]
    )
    assert code == 0 and out.split()[1:] == ["12"]


def test_compare_errors(two_audits: dict[str, Any], helpers: SimpleNamespace, capsys) -> None:
    assert helpers.run_cli(["compare", "auditA", "nope", "--results", str(two_audits["results"])])[0] == 2
    assert "no finished audit 'nope'" in capsys.readouterr().err


RETRAIN_DEMO = ["demo", "--patients", "300", "--models", "16", "--targets", "2", "--no-progress", "--json"]


@pytest.mark.heavy
@pytest.mark.slow
def test_compare_after_a_real_retrain_lists_the_planted_atypical_patients(tmp_path: Path, helpers: SimpleNamespace) -> None:
    """End to end: audit A of a synthetic ED cohort with a recipe that barely memorises (1 epoch), then a
    "retrain" with the demo's recipe run to 100 epochs on the same data and results folder; `medaudit compare A B`
    lists the patients of the planted atypical stays (tasks/synthetic/mimic_iv_ed.py: an outcome only
    memorising predicts) among those newly at risk, far more often than the other patients."""
    import duckdb
    import pandas as pd

    results = tmp_path / "results"
    audits = {}
    for name, extra in (("a", ["--epochs", "1"]), ("b", ["--epochs", "100"])):
        code, out = helpers.run_cli([*RETRAIN_DEMO, *extra, "--results", str(results)])
        assert code == 0, out
        audits[name] = helpers.json_tail(out)
    a, b = audits["a"], audits["b"]
    assert not b["reused"] and a["dataset_version"] == b["dataset_version"] and a["pool_key"] != b["pool_key"]
    code, out = helpers.run_cli(["compare", a["audit_id"], b["audit_id"], "--results", str(results), "--json"])
    assert code == 0, out
    doc = json.loads(out)
    newly = set(doc["newly_at_risk"])

    # planted stays -> patient keys through the snapshot's records table (source_row), never through raw ids
    truth = pd.read_csv(results / "demo_data" / "mimic-iv-ed" / "n300_seed0" / "_synthetic_truth.csv")
    rows = [int(r) for r in truth.loc[truth["plant"] == "atypical_stay", "source_row"]]
    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        planted = {
            k
            for (k,) in con.execute(
                "SELECT DISTINCT r.patient_key FROM records r JOIN patient_stats s ON s.patient_key = r.patient_key AND s.audit_id = ? "
                "WHERE r.dataset_version = ? AND list_contains(?, r.source_row)",
                [b["audit_id"], b["dataset_version"], rows],
            ).fetchall()
        }
        risk = {
            name: dict(con.execute("SELECT patient_key, risk_max FROM patient_stats WHERE audit_id = ?", [r["audit_id"]]).fetchall())
            for name, r in audits.items()
        }
    assert len(planted) >= 3, planted
    exposed_before = {k for k in planted if risk["a"][k] >= doc["risk_threshold"][0]}
    candidates = planted - exposed_before  # planted patients not yet at risk in A: the retrain can make them newly at risk
    found = candidates & newly
    share_planted, share_others = len(found) / len(candidates), len(newly - planted) / (len(risk["b"]) - len(planted))
    rank_b = pd.Series(risk["b"]).rank(pct=True)
    print(
        f"planted {len(planted)}, at risk in A {len(exposed_before)}, newly at risk {len(found)} ({share_planted:.0%}); "
        f"others {share_others:.1%} newly; planted median risk percentile in B {rank_b[list(planted)].median():.2f}"
    )
    # 100 epochs expose many patients (the retrain's price); the planted ones at least twice as often, and on top
    assert len(found) >= 2 and len(found) >= 0.5 * len(candidates), (found, candidates, doc["counts"])
    assert share_planted >= 2 * share_others, (share_planted, share_others)
    assert rank_b[list(planted)].median() >= 0.75

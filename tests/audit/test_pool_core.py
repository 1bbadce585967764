"""The pool audit's core on hand-made arrays (no store, no DuckDB file): a simulated pool with known members."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.attacks import list_attacks
from tasks.audit.pool_audit import audit_pool
from tasks.config import AttackConfig, ReportConfig


def test_core_finds_the_planted_patients_from_arrays(cohort: Any, report: ReportConfig) -> None:
    """Streamed in three blocks: every table has its rows, the planted (memorised) patients are the exposed ones,
    and every registered pool attack has its summary rows (online LiRA better than chance)."""
    result = audit_pool(cohort.snapshot, cohort.pool_scores(), AttackConfig(), report)

    assert len(result.record_stats) == cohort.n_train and result.record_stats["record_idx"].is_monotonic_increasing
    patients = result.patient_stats
    assert len(patients) == len(cohort.planted) and patients["patient_key"].tolist()[:2] == ["p0000", "p0001"]
    risk = patients["risk_max"].to_numpy()
    assert np.median(risk[cohort.planted]) > 0.95 > np.median(risk[~cohort.planted])
    at_risk = patients["at_risk"].to_numpy()
    assert at_risk[cohort.planted].all() and at_risk[~cohort.planted].sum() <= 2  # FDR 5%: a false discovery or two

    summary = result.attack_summary.set_index(["attack", "level"])
    assert [a.name for a in list_attacks("pool")] == list(dict.fromkeys(result.attack_summary["attack"]))
    assert set(summary.index) >= {("lira_online", "patient"), ("lira_offline_fixed_var", "patient"), ("rmia_offline", "record")}
    assert ("loss", "patient") not in summary.index  # only log-likelihood ratios add up over a patient's records
    assert (summary["n_targets"] == 2).all()
    auc = summary["auc_mean"]
    assert auc.notna().all() and auc[("lira_online", "record")] > 0.55 and auc[("lira_online", "patient")] > 0.55  # 10% memorised
    assert len(result.attack_results) == 2 * len(summary)  # one row per target model
    assert result.attack_params["rmia_offline"]["n_population_available"] == 60
    assert result.attack_params["rmia_offline"]["a_source"] == "tuned on reference model 2 as pseudo-target"
    assert result.headline["n_targets"] == 2 and result.headline["lira_auc_mean"] == summary.loc[("lira_online", "record"), "auc_mean"]


def test_core_without_targets_or_population_runs_no_attack_it_cannot(cohort: Any, report: ReportConfig) -> None:
    """No held-out target: no attack rows at all; no population (test split): no probability attack."""
    pool = cohort.pool_scores()
    pool.n_targets = 0
    result = audit_pool(cohort.snapshot, pool, AttackConfig(), report)
    assert result.attack_summary.empty and result.attack_params == {} and len(result.record_stats) == cohort.n_train

    pool = cohort.pool_scores()
    pool.population, pool.n_population = [], 0
    attacks = set(audit_pool(cohort.snapshot, pool, AttackConfig(), report).attack_summary["attack"])
    assert attacks == {a.name for a in list_attacks("pool") if a.needs == "scores"}

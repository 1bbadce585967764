"""Parameterised read queries of the commands and the re-audit rule: SQL text stays in tasks/storage.

Each function takes an open :class:`AuditStore` or a database path (opened read-only) and returns
frames or tuples; callers never compose SQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tasks.storage.store import AuditStore, read_only_query

# The query `medaudit demo` prints as an example of `medaudit sql`.
EXAMPLE_QUERY = "SELECT * FROM subgroup_risk WHERE level = 'patient'"

_DP_KEYS = ("epsilon", "delta", "noise_multiplier", "sampling_rate", "steps", "n_units", "auc_bound")


def pool_dp_accounting(db_path: Path, pool_key: str, n_models: int) -> pd.Series:
    """DP accounting over the complete models ``< n_models`` of a pool, from ``pool_models.train_info``:
    model count, test AUROC mean/std and medians (min/max for epsilon, max for the bound) of the DP fields."""
    col = {k: f"CAST(train_info->'dp'->>'{k}' AS DOUBLE)" for k in _DP_KEYS}
    return read_only_query(
        db_path,
        f"""SELECT count(*) AS n_models, avg(test_auroc) AS auroc_mean, stddev_samp(test_auroc) AS auroc_std,
                   median({col["epsilon"]}) AS eps_med, min({col["epsilon"]}) AS eps_min, max({col["epsilon"]}) AS eps_max,
                   median({col["delta"]}) AS delta, median({col["noise_multiplier"]}) AS sigma,
                   median({col["sampling_rate"]}) AS q, median({col["steps"]}) AS steps, median({col["n_units"]}) AS n_units,
                   median({col["auc_bound"]}) AS bound, max({col["auc_bound"]}) AS bound_max
            FROM models WHERE pool_key = ? AND status = 'complete' AND model_idx < ?""",
        [pool_key, int(n_models)],
    ).iloc[0]


def pool_scored_records(db_path: Path, pool_key: str) -> pd.DataFrame:
    """Every scored record of a pool: ``risk, n_in, n_out`` and its patient's ``n_records``."""
    return read_only_query(
        db_path,
        """SELECT r.risk, r.n_in, r.n_out, p.n_records
            FROM record_risk r JOIN patient_risk p USING (pool_key, patient_key)
            WHERE r.pool_key = ? AND r.risk IS NOT NULL""",
        [pool_key],
    )


def pool_patient_risks(db_path: Path, pool_key: str) -> pd.DataFrame:
    """The ``risk`` of every patient of a pool's audits."""
    return read_only_query(db_path, "SELECT risk FROM patient_risk WHERE pool_key = ?", [pool_key])


def pool_test_auroc(db_path: Path, pool_key: str) -> pd.DataFrame:
    """One row: mean ``m`` and population std ``s`` of the test AUROC of a pool's models."""
    return read_only_query(db_path, "SELECT avg(test_auroc) AS m, stddev_pop(test_auroc) AS s FROM models WHERE pool_key = ?", [pool_key])


def latest_finished_audit(store: AuditStore, dataset: str | None = None, audit_id: str | None = None) -> pd.DataFrame:
    """At most one row of ``audits``: the latest finished audit, of ``dataset`` and/or with ``audit_id`` where given."""
    where, params = ["finished_at IS NOT NULL"], []
    if dataset:
        where.append("dataset = ?")
        params.append(dataset)
    if audit_id:
        where.append("audit_id = ?")
        params.append(audit_id)
    return store.query(
        "SELECT audit_id, dataset, dataset_version, pool_key, n_models, n_targets, finished_at, headline FROM audits "
        f"WHERE {' AND '.join(where)} ORDER BY finished_at DESC LIMIT 1",
        params,
    )


def patients_above(store: AuditStore, audit_id: str, risk: float) -> tuple[Any, ...]:
    """(patients with ``risk_max >= risk``, scored patients) of one audit."""
    sql = "SELECT count(*) FILTER (WHERE risk_max >= ?), count(risk_max) FROM patient_stats WHERE audit_id = ?"
    return tuple(store.con.execute(sql, [risk, audit_id]).fetchall()[0])


def attack_means(store: AuditStore, audit_id: str, attack: str, level: str) -> tuple[Any, ...]:
    """(target models, mean AUC, mean TPR at FPR 1e-3) of one attack at one level of an audit."""
    sql = "SELECT count(*), avg(auc), avg(tpr_at_fpr[0.001]) FROM attack_results WHERE audit_id = ? AND attack = ? AND level = ?"
    return tuple(store.con.execute(sql, [audit_id, attack, level]).fetchall()[0])


def audit_history(db_path: Path, dataset: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The ``audit_history`` view and, where the file has it, ``reaudit_history`` (without keys and run ids),
    both restricted to ``dataset`` where given."""
    where, params = ("", []) if not dataset else (" WHERE dataset = ?", [dataset])
    df = read_only_query(db_path, "SELECT * FROM audit_history" + where, params)
    has_runs = not read_only_query(db_path, "SELECT 1 FROM information_schema.tables WHERE table_name = 'reaudit_history'").empty
    runs = (
        read_only_query(db_path, "SELECT * EXCLUDE (dataset_version, pool_key, flow_run_id) FROM reaudit_history" + where, params)
        if has_runs
        else None
    )
    return df, runs


def finished_audits_of(store: AuditStore, dataset: str) -> pd.DataFrame | None:
    """The finished audits of ``dataset`` with a headline, latest first (None when the file has no ``audits`` table)."""
    tables = set(store.query("SELECT table_name FROM information_schema.tables")["table_name"])
    if "audits" not in tables:
        return None
    return store.query(
        "SELECT audit_id, pool_key, dataset_version, n_models, n_targets, config, headline, finished_at FROM audits "
        "WHERE dataset = ? AND finished_at IS NOT NULL AND headline IS NOT NULL ORDER BY finished_at DESC",
        [dataset],
    )

"""One row per DP-SGD pool of `medaudit dp-sweep`: the accounted privacy next to the empirical risk.

Per pool the row puts the accounted privacy (read back from ``pool_models.train_info``), the theoretical
AUC bound it implies (tasks/risk/dp_bounds.py) and the empirical risk side by side. ``inf`` is the
non-private pool: trained once, shared by every unit's curve. A row is flagged only when the observed
maximum record AUC exceeds what the estimator itself produces when every record sits exactly at the bound
(tasks/risk/dp_bounds.py max_auc_noise_limit). For record-level DP only records of single-record patients
are compared: a patient's records enter a model together, so for a patient with k records record-level DP
gives only the group guarantee k·epsilon.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tasks.config import AuditConfig
from tasks.risk.dp_bounds import max_auc_noise_limit
from tasks.storage.queries import pool_dp_accounting, pool_scored_records

UNITS = ("record", "patient")
NO_DP = "none"  # the unit column of the non-private (epsilon = inf) pool


def dp_config(base_cfg: AuditConfig, epsilon: float, unit: str | None, clip_norm: float | None) -> AuditConfig:
    """``base_cfg`` with the DP fields of its recipe set for one sweep point (epsilon inf: DP off)."""
    data = base_cfg.model_dump(mode="json")
    recipe = data["pool"]["recipe"]
    if math.isinf(epsilon):  # the plain pool: unit and clip norm stay as configured, so its key is the usual one
        recipe["dp_epsilon"] = None
    else:
        recipe.update({"dp_epsilon": epsilon, "dp_unit": unit})
        if clip_norm is not None:
            recipe["dp_clip_norm"] = clip_norm
    return AuditConfig.model_validate(data)


def sweep_row(cfg: AuditConfig, res: dict[str, Any], unit: str, epsilon: float) -> dict[str, Any]:
    """One table row: accounting from pool_models.train_info (the audited models), empirical risk from the audit's views."""
    acc = pool_dp_accounting(cfg.db_path, res["pool_key"], cfg.pool.n_models)
    rec = pool_scored_records(cfg.db_path, res["pool_key"])
    h = res["headline"]
    dp_pool = not math.isinf(epsilon)
    bound = float(acc["bound"]) if dp_pool else 1.0
    # the records whose membership the guarantee covers: all for patient-level DP; for record-level
    # DP those of single-record patients (k records of one patient: only k·epsilon by group privacy)
    covered = rec if unit != "record" else rec[rec["n_records"] == 1]
    limit = (
        max_auc_noise_limit(
            float(acc["bound_max"]),
            covered["n_in"].to_numpy(),
            covered["n_out"].to_numpy(),
            min_per_side=cfg.attack.min_models_per_side,
        )
        if dp_pool
        else float("nan")
    )
    max_covered = float(covered["risk"].max()) if len(covered) else float("nan")
    risk = rec["risk"].to_numpy(dtype=float)
    return {
        "unit": unit,
        "target_epsilon": epsilon,
        "epsilon_median": float(acc["eps_med"]) if dp_pool else math.inf,
        "epsilon_min": float(acc["eps_min"]) if dp_pool else math.inf,
        "epsilon_max": float(acc["eps_max"]) if dp_pool else math.inf,
        "delta": acc["delta"],
        "noise_multiplier": acc["sigma"],
        "sampling_rate": acc["q"],
        "steps": acc["steps"],
        "n_units": acc["n_units"],
        "auc_bound": bound,
        "lira_auc_mean": h.get("lira_auc_mean"),
        "max_record_auc": float(risk.max()) if len(risk) else float("nan"),
        "p99_record_auc": float(np.quantile(risk, 0.99)) if len(risk) else float("nan"),
        "max_covered_record_auc": max_covered,
        "bound_noise_limit": limit,
        # strictly above the limit by more than float noise: with few models both are 1.0 (up to 1e-9)
        "exceeds_bound": bool(dp_pool and np.isfinite(limit) and max_covered > limit + 1e-6),
        "patients_above_threshold": h["n_patients_above_threshold"],
        "share_above_threshold": h["share_patients_above_threshold"],
        "test_auroc_mean": acc["auroc_mean"],
        "test_auroc_std": acc["auroc_std"],
        "n_models": int(acc["n_models"]),
        "pool_key": res["pool_key"],
    }

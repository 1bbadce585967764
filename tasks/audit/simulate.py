"""Simulated pools with planted memorised patients: ground truth for the swap null and the FDR rule.

Scores of model m on record n: ``s = a_n + b_m + e_mn + delta_n * IN_mn`` with a record level ``a_n``, a
model offset ``b_m`` shared by all records (what a training seed does), unit noise ``e_mn`` and a shift
``delta_n`` (in noise sds) on the records of planted patients, so a planted record's binormal AUC is
``Phi(delta / sqrt(2))``. Masks are the pool's complementary pairs (tasks/training/masks.py). The audit of a
simulated pool runs the same functions as ``tasks.audit.pool_audit.analyze_pool`` (record statistics, patient
maximum, swap null, BH rule). Used by tests/risk/test_null.py and bench/simulate_fdr.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from tasks.attacks.record_auc import auc_interval_nct, record_statistics
from tasks.risk.null import SwapNull, patient_max_z
from tasks.risk.patient import patient_risk
from tasks.training.masks import pool_masks


@dataclass
class SimulatedPool:
    scores: np.ndarray  # (M, N, 1)
    in_mask: np.ndarray  # (M, N)
    codes: np.ndarray  # (N,) patient code of each record
    planted: np.ndarray  # (P,) bool: memorised patients
    n_patients: int
    strength: np.ndarray  # (P,) planted record AUC (0.5 for patients not planted)


def simulate_pool(
    n_patients: int,
    n_models: int,
    *,
    planted_share: float = 0.02,
    planted_auc: float | tuple[float, ...] = 0.98,
    records_per_patient: float = 2.0,
    seed: int = 0,
) -> SimulatedPool:
    """A pool of ``n_models`` (even) models over ``n_patients`` patients with 1 + Poisson(records_per_patient - 1)
    records each; ``planted_share`` of the patients memorised at record AUC ``planted_auc`` (several values: assigned
    to the planted patients in turn)."""
    rng = np.random.default_rng(seed)
    counts = 1 + rng.poisson(max(records_per_patient - 1.0, 0.0), n_patients)
    codes = np.repeat(np.arange(n_patients), counts)
    n = codes.size
    strength = np.full(n_patients, 0.5)
    chosen = rng.choice(n_patients, size=round(planted_share * n_patients), replace=False)
    strength[chosen] = np.resize(np.atleast_1d(np.asarray(planted_auc, dtype=np.float64)), chosen.size)
    planted = strength > 0.5
    in_mask = pool_masks(n_patients, seed, n_models)[:, codes]
    delta = np.sqrt(2.0) * ndtri(strength[codes])
    scores = rng.normal(0, 2, n)[None, :] + rng.normal(0, 0.5, n_models)[:, None] + rng.normal(size=(n_models, n)) + delta * in_mask
    return SimulatedPool(scores[:, :, None], in_mask, codes, planted, n_patients, strength)


@dataclass
class SimulatedAudit:
    at_risk: np.ndarray  # (P,) FDR-controlled flags
    raw: np.ndarray  # (P,) risk >= threshold
    expected: float  # patients at or above the threshold by chance (swap null)
    record_lo: np.ndarray  # (N,) noncentral-t interval
    record_hi: np.ndarray


def audit_simulated(pool: SimulatedPool, *, threshold: float = 0.9, fdr: float = 0.05, n_swaps: int = 100, seed: int = 0) -> SimulatedAudit:
    """Record statistics, patient maximum, swap null and the rule ``risk >= threshold and q <= fdr``."""
    m = pool.scores.shape[0]
    st = record_statistics(pool.scores, pool.in_mask)
    risk = patient_risk(st["auc"].to_numpy(), pool.codes, pool.n_patients)["risk_max"].to_numpy()
    null = SwapNull(list(range(m)), pool.n_patients, n_swaps=n_swaps, seed=seed, threshold=threshold)
    z = null.add(pool.scores, pool.in_mask, pool.codes)
    res = null.finish(patient_max_z(z, pool.codes, pool.n_patients))
    raw = risk >= threshold
    lo, hi = auc_interval_nct(*(st[c].to_numpy() for c in ("mu_in", "mu_out", "sd_in", "sd_out", "n_in", "n_out")))
    return SimulatedAudit(raw & (res.patient_q <= fdr), raw, res.patient_expected, lo, hi)

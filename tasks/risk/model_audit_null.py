"""Verdicts on an audited model's member patients against its own non-member patients.

The risk of tasks/risk/model_audit.py is uniform for a non-member only when the reference models score
like the audited model (same recipe, same inputs). A model trained outside medaudit rarely is: its
non-members measured 4% to 61% at risk >= 0.9 where uniformity says 10%. So the non-member patients,
scored the same way, are the *empirical null*: every member patient's risk gets the p-value

    p = (1 + #{non-member patients with risk >= r}) / (1 + n_non_members)

(valid for any null distribution when members and non-members are exchangeable under "no leakage"),
Benjamini-Hochberg q-values over the member patients control the false discovery rate, and the count
above a threshold is read against the non-member rate with an interval for the difference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import fisher_exact, mannwhitneyu, norm

from tasks.risk.fdr import bh_qvalues

CALIBRATION_LEVELS = (0.5, 0.9, 0.99)


def empirical_pvalues(risk: np.ndarray, null: np.ndarray) -> np.ndarray:
    """p-value (n,) of each ``risk`` (n,) against the ``null`` sample (m,): (1 + #{null >= r}) / (1 + m).

    NaN risks give NaN; NaN null values are dropped."""
    null = np.sort(np.asarray(null, dtype=np.float64)[np.isfinite(null)])
    risk = np.asarray(risk, dtype=np.float64)
    at_least = len(null) - np.searchsorted(null, risk, side="left")
    p = (1.0 + at_least) / (1.0 + len(null))
    return np.where(np.isfinite(risk), p, np.nan)


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial share k / n."""
    if n == 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(c - h), float(c + h)


def newcombe_diff_interval(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10) for p1 - p2 from two Wilson intervals."""
    p1, p2 = k1 / max(n1, 1), k2 / max(n2, 1)
    l1, u1 = wilson_interval(k1, n1, level)
    l2, u2 = wilson_interval(k2, n2, level)
    d = p1 - p2
    return d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def calibration(null: np.ndarray, levels: tuple[float, ...] = CALIBRATION_LEVELS) -> list[dict[str, float]]:
    """Share of non-member patients with risk >= each level, against the 1 - level a uniform risk gives.

    One dict per level: level, nominal, share, n, ratio (share / nominal)."""
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    out = []
    for lv in levels:
        share = float((null >= lv).mean()) if len(null) else float("nan")
        out.append({"level": lv, "nominal": 1.0 - lv, "share": share, "n": len(null), "ratio": share / (1.0 - lv)})
    return out


def far_from_uniform(null: np.ndarray, threshold: float) -> bool:
    """Whether non-members at ``threshold`` are off the uniform rate by more than a factor 2 (and
    beyond sampling noise: outside the 99% Wilson interval of the observed share)."""
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    if not len(null):
        return True
    nominal = 1.0 - threshold
    k, n = int((null >= threshold).sum()), len(null)
    lo, hi = wilson_interval(k, n, level=0.99)
    off = not (0.5 * nominal <= k / n <= 2.0 * nominal)
    return bool(off and not (lo <= nominal <= hi))


def member_verdict(
    member_risk: np.ndarray,
    null: np.ndarray,
    threshold: float,
    fdr: float,
    member_rank: np.ndarray | None = None,
    null_rank: np.ndarray | None = None,
) -> dict[str, Any]:
    """Headline of member patients (risk (n,)) against non-member patients (null (m,)).

    ``member_rank`` / ``null_rank`` (same shapes): a statistic ordered like the risk that the p-values
    and the Mann-Whitney test use instead (the log-risk, which does not round to 1.0); default the risk.

    Keys: n_member_patients_significant (BH q <= fdr), fdr, excess_patients_at_risk and its 95% interval
    (count above ``threshold`` minus the non-member rate times n, Newcombe interval of the difference of
    shares times n), fisher_p (members above threshold more often, one-sided), members_above_non_members_p
    (Mann-Whitney, one-sided: member risks stochastically larger), calibration, calibration_far_from_uniform."""
    mem_rank = np.asarray(member_risk if member_rank is None else member_rank, dtype=np.float64)
    non_rank = np.asarray(null if null_rank is None else null_rank, dtype=np.float64)
    mem_rank, non_rank = mem_rank[np.isfinite(mem_rank)], non_rank[np.isfinite(non_rank)]
    mem = np.asarray(member_risk, dtype=np.float64)
    mem = mem[np.isfinite(mem)]
    non = np.asarray(null, dtype=np.float64)
    non = non[np.isfinite(non)]
    q = bh_qvalues(empirical_pvalues(mem_rank, non_rank))
    k1, n1, k2, n2 = int((mem >= threshold).sum()), len(mem), int((non >= threshold).sum()), len(non)
    lo, hi = newcombe_diff_interval(k1, n1, k2, n2) if n1 and n2 else (np.nan, np.nan)
    fisher = float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater")[1]) if n1 and n2 else float("nan")
    mw = float(mannwhitneyu(mem_rank, non_rank, alternative="greater").pvalue) if n1 and n2 else float("nan")
    return {
        "fdr": fdr,
        "n_member_patients_significant": int((q <= fdr).sum()),
        "excess_patients_at_risk_ci": [float(lo * n1), float(hi * n1)],
        "fisher_p": fisher,
        "members_above_non_members_p": mw,
        "calibration": calibration(non),
        "calibration_far_from_uniform": far_from_uniform(non, threshold),
    }


def member_qvalues(member_risk: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, q) of each member patient's risk (n,) against the non-member null (m,)."""
    p = empirical_pvalues(member_risk, null)
    return p, bh_qvalues(p)

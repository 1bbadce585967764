"""Risk of one existing model from few reference models (offline attacks; ``medaudit audit-model``).

A pool's record AUC needs many models each IN and OUT of every record. An existing model is one
model, so its per-record exposure is measured against the OUT reference models only (offline LiRA):

    risk(x) = Phi((s(x) - mu_out(x)) / sd_out(x)),   view-averaged in log space
    (sd_out widened for the few references, see target_record_risk)

the probability that a reference model which never saw x scores it *lower* than the audited model
does. It is the AUC between the audited model's single score and the OUT distribution, on the same
0.5..1 scale as the pool's record AUC: a record the model did not memorise sits near 0.5 (uniform on
0..1 for a non-member), a memorised one near 1. A patient's risk is the maximum over their records.

Because the maximum of several uniform values is not uniform, the audited model's *non-members*
(records it did not train on, usually the test split) are scored the same way and serve as the
false-alarm baseline: how many non-member patients reach the same risk by chance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import log_ndtr
from scipy.stats import t as student_t

from tasks.attacks.lira import SD_FLOOR_ABS, SD_FLOOR_REL, fit_lira_reference
from tasks.risk.patient import patient_risk
from tasks.risk.roc import summarize_attack

PER_RECORD_MIN_OUT = 16  # "auto": per-record stds once the median OUT count reaches this


@dataclass
class TargetRisk:
    """Per-record results of one audited model.

    lira_offline: (N,) log Phi score (higher = member); risk: (N,) exp of it, in (0, 1);
    n_out: (N,) OUT reference models per record; variance: "per_record" or "fixed" as used.
    """

    lira_offline: np.ndarray
    risk: np.ndarray
    n_out: np.ndarray
    variance: str
    extra: dict[str, Any] = field(default_factory=dict)


def target_record_risk(target_scores: np.ndarray, ref_scores: np.ndarray, ref_in: np.ndarray, variance: str = "auto") -> TargetRisk:
    """Offline LiRA of one model against reference models.

    target_scores: (N, V) or (N,); ref_scores: (M, N, V) or (M, N); ref_in: (M, N) bool.
    ``variance``: "per_record", "fixed" (one pooled OUT variance, better with few references) or "auto".

    With few references the plain offline LiRA z-score is over-dispersed: the OUT std is estimated
    from a handful of models (ddof 0 underestimates it) and the OUT median is itself noisy. So the
    variance is the unbiased (ddof 1) one, pooled over records for "fixed", and widened by the
    sampling variance of the median, ``sd * sqrt(1 + pi / (2 n_out))``, and a per-record z is read
    against Student's t with n_out - 1 degrees of freedom: a non-member's risk is then
    close to uniform even with 4 OUT models per record (tested by simulation).
    Records without OUT references (or with only one, per_record) or with a non-finite score get NaN.
    """
    t = np.asarray(target_scores, dtype=np.float64)
    t = t[:, None] if t.ndim == 1 else t
    ref = fit_lira_reference(ref_scores, ref_in)
    if variance == "auto":
        med = float(np.median(ref.n_out)) if ref.n_out.size else 0.0
        variance = "per_record" if med >= PER_RECORD_MIN_OUT else "fixed"
    if variance not in {"per_record", "fixed"}:
        raise ValueError(f"variance must be auto, per_record or fixed, got {variance!r}")
    n = ref.n_out.astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        var1 = np.where(n >= 2, ref.sd_out**2 * n / (n - 1), np.nan)  # (N, V) unbiased
        if variance == "fixed":
            var1 = np.broadcast_to(np.nanmean(var1, axis=0, keepdims=True), var1.shape)
        sd = np.sqrt(var1 * (1.0 + np.pi / (2.0 * n)))
        sd = np.maximum(sd, SD_FLOOR_ABS + SD_FLOOR_REL * np.abs(ref.mu_out))
        z = (t - ref.mu_out) / sd
        # a per-record std from n models makes z Student-t with n - 1 degrees of freedom
        score = (log_ndtr(z) if variance == "fixed" else student_t.logcdf(z, np.maximum(n - 1, 1))).mean(axis=1)
    score[(ref.n_out == 0) | ~np.isfinite(score)] = np.nan
    return TargetRisk(lira_offline=score, risk=np.exp(score), n_out=ref.n_out, variance=variance)


def membership_attack_summary(scores: dict[str, np.ndarray], member: np.ndarray, fprs: list[float]) -> pd.DataFrame:
    """AUC and TPR at each FPR of every attack score (N,) against the true membership (N,) bool.

    One row per attack: attack, auc, n_members, n_non_members, tpr_at_<fpr>...; records with a NaN
    score are left out of that attack's ROC.
    """
    rows = []
    for name, s in scores.items():
        ok = np.isfinite(s)
        summ = summarize_attack(s[ok][None], member[ok][None], fprs)
        rows.append(
            {
                "attack": name,
                "auc": summ["auc_mean"],
                "n_members": int(member[ok].sum()),
                "n_non_members": int((~member[ok]).sum()),
                **{f"tpr_at_{f:g}": summ["tpr_mean"][f] for f in fprs},
            }
        )
    return pd.DataFrame(rows)


def target_patient_risk(record_risk: np.ndarray, member: np.ndarray, patient_codes: np.ndarray, n_patients: int) -> pd.DataFrame:
    """Per patient (index 0..P-1): ``member`` (any record a member), ``n_records``, ``n_member_records``,
    ``risk`` (max over the patient's member records, or over all records for non-member patients)
    and ``risk_mean``."""
    member = np.asarray(member, dtype=bool)
    codes = np.asarray(patient_codes, dtype=np.int64)
    n_member = np.bincount(codes[member], minlength=n_patients)
    is_member = n_member > 0
    # members: only their member records count (a record the model never saw says nothing of it)
    use = np.where(is_member[codes], member, True)
    agg = patient_risk(np.where(use, record_risk, np.nan), codes, n_patients)
    return pd.DataFrame(
        {
            "member": is_member,
            "n_records": np.bincount(codes, minlength=n_patients).astype(np.int64),
            "n_member_records": n_member.astype(np.int64),
            "risk": agg["risk_max"].to_numpy(),
            "risk_mean": agg["risk_mean"].to_numpy(),
        }
    )


def exposure_summary(patients: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Headline of an audited model: member patients at or above ``threshold`` against the non-member
    (chance) rate at the same threshold, and the excess over chance."""
    mem = patients[patients["member"]]["risk"].dropna()
    non = patients[~patients["member"]]["risk"].dropna()
    share_mem = float((mem >= threshold).mean()) if len(mem) else float("nan")
    share_non = float((non >= threshold).mean()) if len(non) else float("nan")
    return {
        "risk_threshold": threshold,
        "n_member_patients": len(mem),
        "n_non_member_patients": len(non),
        "n_member_patients_at_risk": int((mem >= threshold).sum()),
        "share_member_patients_at_risk": share_mem,
        "share_non_member_patients_at_risk": share_non,
        "expected_by_chance": share_non * len(mem) if len(non) else float("nan"),
        "excess_patients_at_risk": int((mem >= threshold).sum()) - share_non * len(mem) if len(non) else float("nan"),
        "max_member_risk": float(mem.max()) if len(mem) else float("nan"),
    }

"""Risk of one existing model from few reference models (offline attacks; ``medaudit audit-model``).

A pool's record AUC needs many models each IN and OUT of every record. An existing model is one
model, so its per-record exposure is measured against the OUT reference models only (offline LiRA):

    risk(x) = Phi((s(x) - mu_out(x)) / sd_out(x)),   view-averaged in log space
    (sd_out widened for the few references: tasks/attacks/lira.py, few_reference_lira)

the probability that a reference model which never saw x scores it *lower* than the audited model
does. It is the AUC between the audited model's single score and the OUT distribution, on the same
0.5..1 scale as the pool's record AUC: a record the model did not memorise sits near 0.5 (uniform on
0..1 for a non-member), a memorised one near 1. A patient's risk is the maximum over their records.

Because the maximum of several uniform values is not uniform, the audited model's *non-members*
(records it did not train on, usually the test split) are scored the same way and serve as the
false-alarm baseline: how many non-member patients reach the same risk by chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.risk.patient import patient_risk
from tasks.risk.roc import summarize_attack


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


def model_patient_risk(record_risk: np.ndarray, member: np.ndarray, patient_codes: np.ndarray, n_patients: int) -> pd.DataFrame:
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

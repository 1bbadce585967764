"""Two audits of the same patients compared: headline deltas and subgroup shifts with significance.

The same patient is at risk (risk >= threshold) or not in audit A and in audit B: paired binary
outcomes, so a group's shift is tested with McNemar's exact test on its discordant patients (those
newly at risk vs those no longer at risk; under "no change" each discordant patient is equally likely
to go either way: Binomial(b + c, 1/2)), two-sided, Holm-adjusted over the groups of one attribute.
Chance alone moves patients across the threshold too (a pool retrained with another seed gives other
risks), which is exactly what the test's null covers; "newly at risk" lists are therefore read with
the group's p-value, not alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from tasks.risk.subgroup import holm_adjust

# Headline numbers compared between audits: (key, label). Keys of issue #13's null model are read if present.
HEADLINE_DELTAS: tuple[tuple[str, str], ...] = (
    ("n_patients", "patients"),
    ("n_patients_above_threshold", "patients with risk >= threshold"),
    ("share_patients_above_threshold", "share of patients with risk >= threshold"),
    ("n_patients_expected_by_chance", "expected by chance"),
    ("n_patients_at_risk", "patients at risk beyond chance (FDR)"),
    ("lira_auc_mean", "aggregate LiRA AUC"),
    ("lira_tpr_at_0.001", "LiRA TPR at FPR 1e-3"),
    ("max_record_auc", "highest record AUC"),
    ("median_record_auc", "median record AUC"),
    ("n_models", "shadow models"),
)


def mcnemar_exact(newly: int, no_longer: int) -> float:
    """Two-sided exact McNemar p for b newly and c no-longer at-risk patients (1.0 when none moved)."""
    n = int(newly) + int(no_longer)
    return 1.0 if n == 0 else float(binomtest(int(newly), n, 0.5).pvalue)


def subgroup_shifts(groups: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    """Add share_a/share_b/share_change, p_value (McNemar), p_holm (per attribute) and suppressed.

    groups: one row per (attribute, group) with patients, at_risk_a, at_risk_b, newly_at_risk,
    no_longer_at_risk (the ``compare_subgroups`` SQL table). Groups of fewer than ``min_cell`` patients
    keep their row but lose every count (suppressed, as in the subgroup tables). Sorted by p_value.
    """
    out = groups.copy()
    n = out["patients"].to_numpy(dtype=float)
    out["share_a"] = out["at_risk_a"] / n
    out["share_b"] = out["at_risk_b"] / n
    out["share_change"] = out["share_b"] - out["share_a"]
    out["p_value"] = [mcnemar_exact(b, c) for b, c in zip(out["newly_at_risk"], out["no_longer_at_risk"], strict=True)]
    out["p_holm"] = np.nan
    for _attr, idx in out.groupby("attribute").groups.items():
        out.loc[idx, "p_holm"] = holm_adjust(out.loc[idx, "p_value"].to_numpy())
    out["suppressed"] = out["patients"] < min_cell
    hidden = [c for c in out.columns if c not in {"attribute", "group", "suppressed"}]
    out[hidden] = out[hidden].astype(float)
    out.loc[out["suppressed"], hidden] = np.nan
    return out.sort_values(["suppressed", "p_value", "share_change"], ascending=[True, True, False], na_position="last").reset_index(
        drop=True
    )


def headline_deltas(a: dict, b: dict) -> pd.DataFrame:
    """(measure, audit_a, audit_b, change) for the headline numbers both audits have."""
    rows = []
    for key, label in HEADLINE_DELTAS:
        va, vb = a.get(key), b.get(key)
        if va is None and vb is None:
            continue
        change = vb - va if isinstance(va, int | float) and isinstance(vb, int | float) else None
        rows.append({"measure": label, "audit_a": va, "audit_b": vb, "change": change})
    return pd.DataFrame(rows, columns=["measure", "audit_a", "audit_b", "change"])

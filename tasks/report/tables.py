"""Tables and text people can read: the subgroup table for the report and the Prefect artifact, the
report's opening paragraph, and the risk-over-time plot.

* ``display_subgroups``: key columns first (attribute, group, patients, share at risk with its CI,
  patients at risk, Holm p), sorted by significance then share at risk, suppressed cells labelled
  ``suppressed (n < k)``, missing attribute values shown as ``(missing)``; the full table stays in
  ``subgroup_risk.csv``.
* ``opening_paragraph``: what was audited, how many patients are exposed and how many chance alone
  would give (issue #13's headline keys read with ``.get``), which groups, what to do.
* ``risk_over_time_plot``: the share (and count) of patients at risk over the audits of a dataset.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from tasks.risk.subgroup import MISSING_GROUP

NULL = "—"  # the one way a missing number is shown
# (column, header) in display order; the first five fit a 1,280-1,400 px screen with room to spare
SUBGROUP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("attribute", "attribute"),
    ("group", "group"),
    ("units", "patients"),
    ("share_above", "share_above"),
    ("share_ci", "share 95% CI"),
    ("n_above", "at risk"),
    ("p_holm", "p_holm"),
    ("top_observed", "in top 1%"),
    ("top_expected", "expected in top 1%"),
    ("median_risk", "median_risk"),
)
SUBGROUP_LEGEND = (
    "patients: patients of the group with a risk estimate; share_above: share of them with risk >= {threshold} "
    "(95% Wilson CI); at risk: their number; p_holm: is the group over-represented among the top {top:g}% "
    "most exposed patients (two-sided Fisher exact test, Holm-adjusted within the attribute; small = unlikely by "
    "chance); in top / expected in top: observed vs expected count there. Sorted by p_holm, then share_above. "
    "Groups of fewer than {k} patients are suppressed. Every column (record level, residuals, chi-square p) is in "
    "subgroup_risk.csv."
)


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return NULL
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def display_subgroups(table: pd.DataFrame, min_cell: int, level: str = "patient") -> pd.DataFrame:
    """The ``level`` rows of a suppressed subgroup table as strings, sorted and labelled for people (see module doc)."""
    t = table[table["level"] == level] if "level" in table.columns else table
    t = t.copy()
    suppressed = t["suppressed"].astype(bool) if "suppressed" in t.columns else pd.Series(False, index=t.index)
    t["_order"] = suppressed.astype(int)
    t = t.sort_values(["_order", "p_holm", "share_above"], ascending=[True, True, False], na_position="last")
    suppressed = suppressed.loc[t.index]
    rows = []
    for (_, r), small in zip(t.iterrows(), suppressed, strict=True):
        group = "(missing)" if str(r["group"]) == MISSING_GROUP else str(r["group"])
        if small:
            rows.append({"attribute": r["attribute"], "group": group, "patients": f"suppressed (n < {min_cell})"})
            continue
        row = {}
        for col, header in SUBGROUP_COLUMNS:
            if col == "share_ci":
                row[header] = f"{_fmt(r.get('share_lo'))}–{_fmt(r.get('share_hi'))}" if pd.notna(r.get("share_lo")) else NULL
            elif col == "group":
                row[header] = group
            elif col in ("units", "n_above", "top_observed"):
                row[header] = NULL if pd.isna(r.get(col)) else str(int(r[col]))
            elif col == "attribute":
                row[header] = str(r[col])
            else:
                row[header] = _fmt(r.get(col), 4 if col == "p_holm" else 3)
        rows.append(row)
    headers = [h for _, h in SUBGROUP_COLUMNS]
    return pd.DataFrame(rows, columns=headers).fillna("")


def opening_paragraph(dataset: str, h: dict, subgroups: pd.DataFrame, alpha: float = 0.05) -> str:
    """Plain-language summary of one audit from its headline and subgroup table (patient level)."""
    n, thr = h.get("n_patients"), h.get("risk_threshold")
    above = h.get("n_patients_above_threshold")
    text = (
        f"This audit trained {h.get('n_models')} shadow models on random halves of the {n} patients of {dataset} "
        f"and measured, for every patient, how well a membership-inference attack tells whether that patient was in a "
        f"model's training data (risk 0.5 = chance, 1 = always)."
    )
    expected, at_risk = h.get("n_patients_expected_by_chance"), h.get("n_patients_at_risk")
    if at_risk is not None:
        fdr = h.get("fdr")
        text += (
            f" {above} patients reach risk ≥ {thr}, where chance alone would give about {_fmt(expected, 1)}; "
            f"{at_risk} are exposed beyond chance" + (f" (false discovery rate {fdr:g})" if fdr is not None else "") + "."
        )
        if h.get("evidence") == "insufficient":
            text += f" The evidence is insufficient: {h.get('evidence_reason') or 'the pool is too small to separate risk from chance'}."
    else:
        text += f" {above} patients ({100 * h.get('share_patients_above_threshold', 0):.1f}%) reach risk ≥ {thr}."
        if expected is not None:
            text += f" Chance alone would give about {_fmt(expected, 1)}."
    sub = (
        subgroups[(subgroups.get("level", "patient") == "patient") & ~subgroups["suppressed"].astype(bool)] if len(subgroups) else subgroups
    )
    hot = sub[(sub["p_holm"] <= alpha) & (sub["top_observed"] > sub["top_expected"])].sort_values("p_holm") if len(sub) else sub
    if len(hot):
        names = ", ".join(f"{r.attribute} = {r.group} ({_fmt(r.share_above * 100, 1)}% at risk)" for r in hot.head(4).itertuples())
        text += f" Groups over-represented among the most exposed (Holm p ≤ {alpha:g}): {names}."
    else:
        text += " No group is significantly over-represented among the most exposed patients."
    if at_risk or (at_risk is None and above):
        text += (
            " What to do: before releasing a model trained on these data, review the exposed patients and groups below "
            "(pseudonymous keys, re-identifiable only by the data steward), and consider training with differential "
            "privacy or removing duplicated and atypical records; re-audit after any change (`medaudit compare`)."
        )
    else:
        text += " What to do: nothing beyond routine re-audits when the data or the training recipe change."
    return text


def risk_over_time_plot(history: pd.DataFrame, path: Path, threshold: float) -> Path:
    """Share of patients with risk >= threshold per audit (x: finish time), patients at risk beyond chance if known.

    history: one row per finished audit of the dataset with finished_at, share_patients_above_threshold,
    n_patients_above_threshold and (optionally) n_patients_at_risk and pool_key.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    h = history.sort_values("finished_at")
    if len(h):
        ax.plot(
            h["finished_at"],
            100 * h["share_patients_above_threshold"],
            "o-",
            color="tab:red",
            label=f"% of patients with risk ≥ {threshold}",
        )
        ax.set_ylim(bottom=0)
        if "n_patients_at_risk" in h and h["n_patients_at_risk"].notna().any():
            ax2 = ax.twinx()
            ax2.plot(h["finished_at"], h["n_patients_at_risk"], "s--", color="tab:purple", label="patients at risk beyond chance")
            ax2.set_ylabel("patients beyond chance")
            ax2.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no audits", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("% of patients at risk")
    ax.set_xlabel("audit finished")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"Risk over time: {len(h)} audit(s)")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# headline numbers of the current audit added to the risk-over-time history (issue #13's FDR count where present)
HISTORY_KEYS = ("share_patients_above_threshold", "n_patients_above_threshold", "n_patients_at_risk")


def with_current_audit(history: pd.DataFrame, headline: dict[str, Any], audit_id: str, pool_key: str, n_models: int) -> pd.DataFrame:
    """The dataset's risk history (``AuditStore.risk_history``) with the audit being finished appended, timed now."""
    now = {"audit_id": audit_id, "pool_key": pool_key, "n_models": n_models, "finished_at": datetime.now(UTC).replace(tzinfo=None)}
    return pd.concat([history, pd.DataFrame([{**now, **{k: headline.get(k) for k in HISTORY_KEYS}}])], ignore_index=True)

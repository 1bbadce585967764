"""The release gate (`medaudit gate`): the latest audit's numbers against thresholds, and whether its evidence
is strong enough to pass or fail at all. The command prints and picks the exit code; the checks live here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tasks.errors import MedauditError
from tasks.storage.queries import attack_means, latest_finished_audit, patients_above


@dataclass
class Check:
    """One threshold check: the observed value, its threshold, and whether it held."""

    name: str
    observed: float | None
    threshold: float
    passed: bool | None  # None: could not be evaluated
    detail: str = ""


def latest_audit(store: Any, dataset: str | None = None, audit_id: str | None = None) -> dict[str, Any]:
    rows = latest_finished_audit(store, dataset, audit_id)
    if rows.empty:
        what = f"audit {audit_id}" if audit_id else "finished audit" + (f" of {dataset}" if dataset else "")
        raise MedauditError(f"{store.path}: no {what} found")
    row = rows.iloc[0].to_dict()
    row["headline"] = json.loads(row["headline"]) if isinstance(row["headline"], str) else row["headline"]
    return row


def gate_checks(
    store: Any,
    audit_id: str,
    *,
    max_share_above: float | None,
    risk: float,
    max_tpr_at_1e3: float | None,
    max_auc: float | None,
    attack: str = "lira_online",
    level: str = "record",
) -> list[Check]:
    """Each requested check with its observed value; ``passed`` is None when the audit lacks the number."""
    checks: list[Check] = []
    if max_share_above is not None:
        n_above, n_scored = patients_above(store, audit_id, risk)
        share = n_above / n_scored if n_scored else None
        checks.append(
            Check(
                f"share of patients with risk >= {risk:g}",
                share,
                max_share_above,
                None if share is None else share <= max_share_above,
                f"{n_above} of {n_scored} scored patients",
            )
        )
    if max_tpr_at_1e3 is not None or max_auc is not None:
        n, auc, tpr = attack_means(store, audit_id, attack, level)
        detail = f"{attack}, {level} level, mean over {n} target models"
        if max_tpr_at_1e3 is not None:
            checks.append(Check(f"{attack} TPR at FPR 1e-3", tpr, max_tpr_at_1e3, None if tpr is None else tpr <= max_tpr_at_1e3, detail))
        if max_auc is not None:
            checks.append(Check(f"{attack} AUC", auc, max_auc, None if auc is None else auc <= max_auc, detail))
    return checks


def evidence_shortfall(headline: dict[str, Any], min_evidence: str) -> str | None:
    """Why the audit's evidence is below ``min_evidence`` ('sufficient' or 'none'), or None when it is enough.

    Audits from before the swap null carry no evidence level and are judged on their numbers alone.
    """
    if min_evidence == "none" or headline.get("evidence") in (None, "sufficient"):
        return None
    return str(headline.get("evidence_reason") or "the audit's evidence is insufficient")

"""Alerts on rising risk: a re-audit past its configured limits emits a Prefect event; an Automation notifies.

``breaches`` compares an audit's headline (and the previous audit's) with ``AuditConfig.alerts``;
``emit_risk_alert`` emits ``medaudit.risk.limit-exceeded`` with the dataset as its resource and the
numbers as payload; ``risk_alert_automation`` is the Automation that routes that event to a
notification block (`medaudit alerts` creates both; docs/OPERATIONS.md).
"""

from __future__ import annotations

from typing import Any

from tasks.config import AlertConfig

EVENT = "medaudit.risk.limit-exceeded"
AUTOMATION_NAME = "medaudit: risk limit exceeded"


def _at_risk(h: dict[str, Any]) -> tuple[int | None, str]:
    """Patients at risk beyond chance (issue #13's FDR count) where the audit has it, else the raw count above threshold."""
    if h.get("n_patients_at_risk") is not None:
        return int(h["n_patients_at_risk"]), "patients at risk beyond chance (FDR)"
    n = h.get("n_patients_above_threshold")
    return (None if n is None else int(n)), "patients with risk >= threshold"


def breaches(headline: dict[str, Any], previous: dict[str, Any] | None, limits: AlertConfig) -> list[dict[str, Any]]:
    """Each configured limit the audit exceeds: {limit, observed, threshold, detail}. Missing numbers never alert."""
    out: list[dict[str, Any]] = []
    share = headline.get("share_patients_above_threshold")
    thr = headline.get("risk_threshold")
    if limits.max_share_above is not None and share is not None and share > limits.max_share_above:
        out.append(
            {"limit": "max_share_above", "observed": share, "threshold": limits.max_share_above, "detail": f"share with risk >= {thr}"}
        )
    n, what = _at_risk(headline)
    if limits.max_patients_at_risk is not None and n is not None and n > limits.max_patients_at_risk:
        out.append({"limit": "max_patients_at_risk", "observed": n, "threshold": limits.max_patients_at_risk, "detail": what})
    before = (previous or {}).get("share_patients_above_threshold")
    if limits.max_rise is not None and share is not None and before is not None and share - before > limits.max_rise:
        out.append(
            {"limit": "max_rise", "observed": share - before, "threshold": limits.max_rise, "detail": f"share {before:.4f} -> {share:.4f}"}
        )
    auc = headline.get("lira_auc_mean")
    if limits.max_lira_auc is not None and auc is not None and auc > limits.max_lira_auc:
        out.append({"limit": "max_lira_auc", "observed": auc, "threshold": limits.max_lira_auc, "detail": "aggregate LiRA AUC"})
    return out


def emit_risk_alert(dataset: str, audit_id: str, previous_audit_id: str | None, found: list[dict[str, Any]], headline: dict) -> Any:
    """Emit the alert event (inside a flow run Prefect relates it to the run). Returns the Event (None if events are off)."""
    from prefect.events import emit_event

    n, what = _at_risk(headline)
    return emit_event(
        event=EVENT,
        resource={"prefect.resource.id": f"medaudit.dataset.{dataset}", "prefect.resource.name": dataset, "medaudit.audit-id": audit_id},
        payload={
            "dataset": dataset,
            "audit_id": audit_id,
            "previous_audit_id": previous_audit_id,
            "breaches": found,
            "summary": "; ".join(f"{b['detail']}: {b['observed']:.4g} > {b['threshold']:.4g} ({b['limit']})" for b in found),
            "patients_at_risk": n,
            "patients_at_risk_means": what,
            "share_patients_above_threshold": headline.get("share_patients_above_threshold"),
            "n_patients": headline.get("n_patients"),
        },
    )


def risk_alert_automation(block_document_id: Any, dataset: str | None = None) -> Any:
    """An Automation: on each ``medaudit.risk.limit-exceeded`` event (of ``dataset``, or any), send the block's notification."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    match = {"prefect.resource.id": f"medaudit.dataset.{dataset}" if dataset else "medaudit.dataset.*"}
    return Automation(
        name=AUTOMATION_NAME + (f" ({dataset})" if dataset else ""),
        description="Sent when a medaudit re-audit exceeds the alert limits of its configuration (alerts: in the audit config)",
        trigger=EventTrigger(expect={EVENT}, match=match, posture=Posture.Reactive, threshold=1),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject="medaudit: privacy risk limit exceeded for {{ event.payload.dataset }}",
                body=(
                    "Audit {{ event.payload.audit_id }} of {{ event.payload.dataset }} (previous: {{ event.payload.previous_audit_id }}): "
                    "{{ event.payload.summary }}. Compare with `medaudit compare {{ event.payload.previous_audit_id }} "
                    "{{ event.payload.audit_id }}`."
                ),
            )
        ],
    )

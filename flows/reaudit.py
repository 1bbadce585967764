"""Re-audits (design D20): a Prefect flow that audits again only when something the result depends on changed.

``reaudit_flow(config)`` ingests the raw folder (idempotent and content-addressed: an unchanged
dataset gives the same snapshot version), computes the pool key and the audit key, and runs the audit
flow (as a sub-flow on the configured Dask cluster) only when the re-audit policy says so
(tasks/audit/reaudit.py: the audit key differs from the latest finished audit's, or ``force``). Every
run, audited or skipped, is recorded for `medaudit history`, with a decision artifact and risk alerts.

Scheduling: ``medaudit serve --config audit.yaml --cron "0 3 * * *"`` serves this flow as a deployment
(``reaudit_deployment`` + ``prefect.serve``) on the Prefect server named by ``PREFECT_API_URL``
(start one with ``medaudit server``); ``medaudit serve --deployments deployments/schedules.yaml``
serves several. See docs/OPERATIONS.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.alerts import EVENT as ALERT_EVENT
from flows.alerts import breaches, emit_risk_alert
from flows.monitoring import name_run
from tasks.audit.reaudit import audit_key_of, decide, latest_audit_of
from tasks.config import AuditConfig
from tasks.risk.compare import HEADLINE_DELTAS
from tasks.storage.store import AuditStore

FLOW_NAME = "medaudit-reaudit"


@flow(name=FLOW_NAME, log_prints=True)
def reaudit_flow(config: dict[str, Any], force: bool = False, show_progress: bool = False) -> dict[str, Any]:
    """Audit ``config`` (an AuditConfig as a dict) again if its dataset snapshot, pool or settings changed."""
    from flows.audit import ingest_snapshot, run_audit
    from tasks.training.pool import pool_key_for

    cfg = AuditConfig.model_validate(config)
    logger = get_run_logger()
    snapshot = ingest_snapshot(cfg, show_progress=show_progress)
    pool_key, _ = pool_key_for(cfg, snapshot)
    key = audit_key_of(cfg, pool_key)
    latest = latest_audit_of(cfg.db_path, cfg.dataset, cfg.raw_dir)
    run, reason = decide(cfg, pool_key, snapshot.version, latest, force)
    logger.info("re-audit of %s: %s -> %s", cfg.dataset, reason, "auditing" if run else "nothing to do")
    decision = "audited" if run else "skipped"
    name_run(f"reaudit {cfg.dataset}: {decision}", ["medaudit", "reaudit", f"dataset:{cfg.dataset}", decision])
    out: dict[str, Any] = {
        "ran": run,
        "reason": reason,
        "dataset": cfg.dataset,
        "dataset_version": snapshot.version,
        "pool_key": pool_key,
        "audit_key": key,
        "previous_audit_id": latest["audit_id"] if latest else None,
        "trained": 0,
        "audit": None,
    }
    previous = latest["headline"] if latest else None
    found: list[dict[str, Any]] = []
    if run:
        result = run_audit(cfg, show_progress=show_progress, snapshot_dir=str(snapshot.path))  # decoded once, above
        out["audit"] = result
        out["trained"] = int(result["headline"].get("trained", 0))
        found = breaches(result["headline"], previous, cfg.alerts)
        if found:
            emit_risk_alert(cfg.dataset, result["audit_id"], out["previous_audit_id"], found, result["headline"])
            logger.warning("re-audit of %s exceeds its alert limits: %s (event %s emitted)", cfg.dataset, found, ALERT_EVENT)
    out["alerts"] = found
    with AuditStore(cfg.db_path) as store:  # every run, audited or skipped, for `medaudit history`
        store.record_reaudit(
            {
                **out,
                "decision": decision,
                "audit_id": out["audit"]["audit_id"] if run else None,
                "flow_run_id": str(flow_run.id or ""),
            }
        )
    create_markdown_artifact(
        key="reaudit-decision",
        markdown=decision_markdown(cfg, out, previous),
        description="Why this re-audit ran or was skipped, with its numbers",
    )
    return out


def decision_markdown(cfg: AuditConfig, out: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """The reaudit-decision artifact: decision and reason, then the headline numbers of the previous and this audit."""
    run = out["ran"]
    new = out["audit"]["headline"] if run else None
    lines = [
        f"# Re-audit of {cfg.dataset}: **{'audited' if run else 'skipped'}**\n",
        f"{out['reason']}\n",
        "| | |\n|---|---|",
        f"| dataset version | `{out['dataset_version']}` |",
        f"| pool | `{out['pool_key']}` ({cfg.pool.n_models} models; trained now: {out['trained']}) |",
        f"| previous audit | `{out['previous_audit_id'] or '-'}` |",
        f"| new audit | `{out['audit']['audit_id'] if run else '-'}` |",
        "",
        "| measure | previous audit | this run | change |\n|---|---|---|---|",
    ]
    for key, label in HEADLINE_DELTAS:
        a = (previous or {}).get(key)
        b = new.get(key) if new else None
        if a is None and b is None:
            continue
        change = f"{b - a:+.4g}" if isinstance(a, int | float) and isinstance(b, int | float) else ""
        lines.append(f"| {label} | {_num(a)} | {_num(b) if run else 'skipped'} | {change} |")
    if out["alerts"]:
        lines += ["", f"**Alert limits exceeded** (event `{ALERT_EVENT}` emitted):", ""]
        lines += [f"- {b['detail']}: {b['observed']:.4g} > {b['threshold']:.4g} (`alerts.{b['limit']}`)" for b in out["alerts"]]
    if run and out["previous_audit_id"]:
        lines += ["", f"Which patients changed: `medaudit compare {out['previous_audit_id']} {out['audit']['audit_id']}`"]
    return "\n".join(lines) + "\n"


def _num(v: Any) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


# ---- deployments ---------------------------------------------------------------------------


def load_audit_config(path: Path, overrides: dict[str, Any] | None = None) -> AuditConfig:
    """An AuditConfig file with ``overrides`` (a nested dict merged over it); paths made absolute.

    A served deployment runs later and elsewhere (another working directory), so relative
    ``raw_dir``/``results_dir`` are resolved against the current directory now.
    """
    data = json.loads(AuditConfig.from_file(Path(path)).model_dump_json())
    _merge(data, overrides or {})
    data["raw_dir"] = str(Path(data["raw_dir"]).expanduser().resolve())
    data["results_dir"] = str(Path(data["results_dir"]).expanduser().resolve())
    return AuditConfig.model_validate(data)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v

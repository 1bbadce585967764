"""Re-audits (design D20): a Prefect flow that audits again only when something the result depends on changed.

``reaudit_flow(config)`` ingests the raw folder (idempotent and content-addressed: an unchanged
dataset gives the same snapshot version), computes the pool key (dataset version, architecture,
recipe, mask seed, views, training code version; see ``tasks.training.pool.pool_key_for``) and from it the
*audit key* (pool key + number of models and targets + attack and report settings). It runs the
audit flow (as a sub-flow on the configured Dask cluster) only when that key differs from the key of
the latest finished audit of the same dataset and raw folder in the results database, or always
when ``force`` is set. The audit flow trains only the models its pool lacks (design D19), so

* an unchanged dataset and config: no audit, no model trained;
* a grown pool (``n_models`` 8 -> 12): an audit that trains exactly the 4 new models;
* a new snapshot, recipe, architecture or seed: a new pool, trained in full; older pools stay stored.

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
from tasks.config import AuditConfig, stable_hash
from tasks.results_layout import audit_report_dir
from tasks.risk.compare import HEADLINE_DELTAS
from tasks.storage.store import AuditStore

FLOW_NAME = "medaudit-reaudit"


def audit_key(pool_key: str, n_models: int, n_targets: int, attack: dict[str, Any], report: dict[str, Any]) -> str:
    """What an audit's numbers depend on: its pool key, pool size, targets, attack and report settings."""
    return stable_hash({"pool_key": pool_key, "n_models": n_models, "n_targets": n_targets, "attack": attack, "report": report})


def audit_key_of(cfg: AuditConfig, pool_key: str) -> str:
    return audit_key(
        pool_key, cfg.pool.n_models, cfg.pool.n_targets, cfg.attack.model_dump(mode="json"), cfg.report.model_dump(mode="json")
    )


def latest_audit_of(db_path: Path, dataset: str, raw_dir: Path) -> dict[str, Any] | None:
    """The latest finished audit of ``dataset`` read from ``raw_dir`` in ``db_path`` (None if none), with its audit key."""
    from tasks.storage.queries import finished_audits_of
    from tasks.storage.store import AuditStore

    if not Path(db_path).exists():
        return None
    store = AuditStore(db_path, read_only=True)
    try:
        rows = finished_audits_of(store, dataset)
    finally:
        store.close()
    if rows is None:
        return None
    want = str(Path(raw_dir).resolve())
    for row in rows.to_dict(orient="records"):
        config = json.loads(row["config"]) if isinstance(row["config"], str) else dict(row["config"] or {})
        if str(Path(config.get("raw_dir", "")).resolve()) != want:
            continue
        row["config"] = config
        row["headline"] = json.loads(row["headline"]) if isinstance(row["headline"], str) else dict(row["headline"] or {})
        row["audit_key"] = audit_key(
            row["pool_key"], int(row["n_models"]), int(row["n_targets"]), config.get("attack", {}), config.get("report", {})
        )
        return row
    return None


def decide(cfg: AuditConfig, pool_key: str, dataset_version: str, latest: dict[str, Any] | None, force: bool) -> tuple[bool, str]:
    """Whether to audit again, and why (a sentence for logs and the decision artifact)."""
    if force:
        return True, "forced"
    if latest is None:
        return True, f"no finished audit of {cfg.dataset} from {cfg.raw_dir} in {cfg.db_path}"
    if latest["audit_key"] == audit_key_of(cfg, pool_key):
        return False, f"unchanged since audit {latest['audit_id']} (dataset version {dataset_version}, pool {pool_key})"
    changes = []
    if latest["dataset_version"] != dataset_version:
        changes.append(f"dataset snapshot {latest['dataset_version']} -> {dataset_version}")
    if latest["pool_key"] != pool_key and latest["dataset_version"] == dataset_version:
        changes.append(f"pool {latest['pool_key']} -> {pool_key} (architecture, recipe, seed, views or training code)")
    if int(latest["n_models"]) != cfg.pool.n_models:
        changes.append(f"pool size {latest['n_models']} -> {cfg.pool.n_models} models")
    if int(latest["n_targets"]) != cfg.pool.n_targets:
        changes.append(f"held-out targets {latest['n_targets']} -> {cfg.pool.n_targets}")
    old = latest["config"]
    for section in ("attack", "report"):
        if old.get(section) != getattr(cfg, section).model_dump(mode="json"):
            changes.append(f"{section} settings")
    return True, "changed since audit " + latest["audit_id"] + ": " + ("; ".join(changes) or "audit key")


def reusable_audit(cfg: AuditConfig) -> dict[str, Any] | None:
    """The latest finished audit of ``cfg`` as run_audit returns it, when nothing its numbers depend on changed.

    The same rule as a scheduled re-audit (``decide``: the audit key), checked without a flow run or a
    decode: the raw folder's fingerprint must name a recorded snapshot (tasks/ingest/cache.py), else the
    data may have changed and None is returned. The result carries ``reused: True`` and the reason;
    ``headline["trained"]`` is 0 (nothing was trained now)."""
    from tasks.datasets import get_dataset
    from tasks.ingest.cache import cached_snapshot, raw_fingerprint
    from tasks.ingest.pseudonym import load_or_create_secret
    from tasks.training.pool import pool_key_for

    latest = latest_audit_of(cfg.db_path, cfg.dataset, cfg.raw_dir)
    if latest is None:
        return None
    adapter = get_dataset(cfg.dataset, cfg.dataset_options)
    snapshot = cached_snapshot(cfg.results_dir, adapter.name, raw_fingerprint(adapter, cfg.raw_dir, load_or_create_secret()))
    if snapshot is None:
        return None
    pool_key, _ = pool_key_for(cfg, snapshot)
    run, reason = decide(cfg, pool_key, snapshot.version, latest, force=False)
    if run:
        return None
    report_dir = audit_report_dir(cfg.results_dir, snapshot.dataset, latest["audit_id"])
    return {
        "audit_id": latest["audit_id"],
        "pool_key": pool_key,
        "dataset_version": snapshot.version,
        "headline": {**latest["headline"], "trained": 0, "recovered": 0},
        "n_raw": snapshot.n_raw,
        "n_accepted": snapshot.n_accepted,
        "n_quarantined": snapshot.n_quarantined,
        "db_path": str(cfg.db_path),
        "report_dir": str(report_dir),
        "files": {"report_html": str(report_dir / "report.html")},
        "reused": True,
        "reason": reason,
    }


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

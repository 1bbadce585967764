"""The re-audit policy (D20): audit again only when something the result depends on changed.

The *audit key* is the pool key (dataset version, architecture, recipe, mask seed, views, training code
version; tasks/training/pool.py pool_key_for) plus the number of models and targets and the attack and
report settings. A re-audit runs when that key differs from the key of the latest finished audit of the
same dataset and raw folder in the results database, or always when forced. The audit flow trains only the
models its pool lacks (D19), so

* an unchanged dataset and config: no audit, no model trained;
* a grown pool (``n_models`` 8 -> 12): an audit that trains exactly the 4 new models;
* a new snapshot, recipe, architecture or seed: a new pool, trained in full; older pools stay stored.

flows/reaudit.py runs this as a Prefect flow; `medaudit demo` reuses an unchanged audit (``reusable_audit``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.config import AuditConfig, stable_hash
from tasks.datasets import get_dataset
from tasks.ingest.cache import cached_snapshot, raw_fingerprint
from tasks.ingest.pseudonym import load_or_create_secret
from tasks.results_layout import audit_report_dir
from tasks.storage.queries import finished_audits_of
from tasks.storage.store import AuditStore
from tasks.training.pool import pool_key_for


def audit_key(pool_key: str, n_models: int, n_targets: int, attack: dict[str, Any], report: dict[str, Any]) -> str:
    """What an audit's numbers depend on: its pool key, pool size, targets, attack and report settings."""
    return stable_hash({"pool_key": pool_key, "n_models": n_models, "n_targets": n_targets, "attack": attack, "report": report})


def audit_key_of(cfg: AuditConfig, pool_key: str) -> str:
    """The audit key of ``cfg`` on pool ``pool_key``."""
    return audit_key(
        pool_key, cfg.pool.n_models, cfg.pool.n_targets, cfg.attack.model_dump(mode="json"), cfg.report.model_dump(mode="json")
    )


def latest_audit_of(db_path: Path, dataset: str, raw_dir: Path) -> dict[str, Any] | None:
    """The latest finished audit of ``dataset`` read from ``raw_dir`` in ``db_path`` (None if none), with its audit key."""
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

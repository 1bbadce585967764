"""The flow of `medaudit audit-model`: audit an existing model with few reference models.

check every input file and the model's input width -> ingest (skipped for an unchanged raw folder) ->
members and logits matched, the model scored on its input contract -> sanity gate (its own task metric)
-> reference pool (trained on Dask, reused if stored) -> offline LiRA / RMIA / LOSS -> record, patient
and subgroup risk, verdicts against the model's own non-members -> DuckDB + report.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.audit import ingest_snapshot, train_pool
from flows.steps import score_target_model_task
from tasks.audit.model_audit import ModelAuditResult, analyze_model, reference_arrays
from tasks.audit.model_loading import ParsedLogits, align_logits, match_members
from tasks.audit.model_run import (
    model_audit_row,
    model_headline,
    model_kind,
    model_name,
    preflight,
    require_target,
    sanity_gate,
    store_model_result,
    verdict,
)
from tasks.config import AuditConfig
from tasks.ingest.pseudonym import load_or_create_secret
from tasks.ingest.snapshot import Snapshot
from tasks.report.model_audit import attacks_frame_for_store, model_audit_rows, write_model_audit_report
from tasks.report.pool_audit import figure_b64
from tasks.results_layout import model_audit_report_dir
from tasks.storage.store import AuditStore
from tasks.training.pool import pool_key_for


def model_logits(
    cfg: AuditConfig, snapshot: Snapshot, parsed: ParsedLogits | None, member: np.ndarray, n_views: int
) -> tuple[np.ndarray, int]:
    """The audited model's logits (N, V, C) on the snapshot and how many records have none: the exported ones
    aligned to the records, or the model scored by a task. member (N,)."""
    tgt = require_target(cfg)
    if parsed is None:
        target = tgt.model_dump(mode="json")
        return score_target_model_task(str(tgt.model_path), str(snapshot.path), member, target, n_views, cfg.pool.seed, str(cfg.raw_dir)), 0
    logits, n_missing = align_logits(parsed, snapshot.records, n_views, allow_missing=tgt.allow_missing)
    if n_missing:
        get_run_logger().warning("%d of %d records have no logits (--allow-missing): left out of the audit", n_missing, len(member))
    return logits, n_missing


def analyze_against_references(
    cfg: AuditConfig,
    snapshot: Snapshot,
    store: AuditStore,
    pool_key: str,
    n_views: int,
    logits: np.ndarray,
    member: np.ndarray,
    *,
    show_progress: bool,
) -> tuple[ModelAuditResult, dict[str, Any] | None]:
    """The analysis against the stored reference pool and, when the target names a reference recipe, the
    verdict against references trained like the audited model (that pool trained first where it lacks models)."""
    tgt = require_target(cfg)
    models = list(range(cfg.pool.n_models))
    kw = {"variance": tgt.variance, "attack": cfg.attack, "report": cfg.report, "fdr": tgt.fdr}
    result = analyze_model(snapshot, logits, member, *reference_arrays(store, snapshot, pool_key, models, n_views), **kw)
    if tgt.reference_recipe is None:
        return result, None
    # references trained like the audited model: how much the verdict depends on the reference recipe
    cfg_m = cfg.model_copy(update={"pool": cfg.pool.model_copy(update={"recipe": tgt.reference_recipe})})
    key_m, _ = pool_key_for(cfg_m, snapshot)
    trained_m = train_pool(cfg_m, snapshot, store, key_m, n_views, show_progress=show_progress)
    res_m = analyze_model(snapshot, logits, member, *reference_arrays(store, snapshot, key_m, models, n_views), **kw)
    matched = {"pool_key": key_m, "trained": trained_m.get("trained", 0), "recipe": tgt.reference_recipe.model_dump(mode="json")}
    return result, matched | verdict(res_m.headline)


def publish_headline(name: str, dataset: str, pool_key: str, headline: dict[str, Any], files: dict[str, Path]) -> None:
    """The Prefect artifact of a model audit: its headline table and risk plot."""
    create_markdown_artifact(
        key="model-audit-headline",
        markdown=(
            f"# Privacy audit of {name}\n\n{dataset} · reference pool `{pool_key}`\n\n| measure | value |\n|---|---|\n"
            + "".join(f"| {k} | {v} |\n" for k, v in model_audit_rows(headline))
            + f"\n![risk]({figure_b64(files['risk_png'])})\n"
        ),
        description="Existing model: patients at risk against chance, offline attacks",
    )


@flow(name="medaudit-audit-model", log_prints=True)
def audit_model_flow(config: dict[str, Any], show_progress: bool = True) -> dict[str, Any]:
    """Audit one existing model; ``config`` is an AuditConfig (with ``target``) as a dict.

    Order matters to the user: every input file and the model's input width are checked before
    ingest; members and logits are matched and the model's own task metric gated before any
    reference model is trained."""
    cfg = AuditConfig.model_validate(config)
    tgt = require_target(cfg)
    logger = get_run_logger()
    members_frame, parsed, contract = preflight(cfg)
    snapshot = ingest_snapshot(cfg, show_progress=show_progress)
    members = match_members(members_frame, tgt.members_path, snapshot.records, snapshot.dataset, load_or_create_secret())
    if warning := members.warning(tgt.members_path):
        logger.warning(warning)
    pool_key, n_views = pool_key_for(cfg, snapshot)
    logits, n_missing = model_logits(cfg, snapshot, parsed, members.member, n_views)
    sanity = sanity_gate(logits, snapshot, members.member, tgt)
    if sanity["sanity_forced"]:
        floor = (sanity["sanity_metric"], sanity["sanity_non_members"], sanity["sanity_floor"])
        logger.warning("sanity gate overridden (--force): the model's %s on its non-members is %.3f, below %.3f", *floor)
    name, kind = model_name(tgt), model_kind(tgt)
    with AuditStore(cfg.db_path) as store:
        store.register_snapshot(snapshot)
        training = train_pool(cfg, snapshot, store, pool_key, n_views, show_progress=show_progress)
        audit_id = uuid.uuid4().hex[:12]
        store.start_model_audit(audit_id, model_audit_row(cfg, pool_key, snapshot.version, str(flow_run.id or "")))
        result, matched = analyze_against_references(
            cfg, snapshot, store, pool_key, n_views, logits, members.member, show_progress=show_progress
        )
        attacks = attacks_frame_for_store(result.attacks, list(cfg.attack.fpr_points))
        store_model_result(store, result, audit_id, list(snapshot.attributes), attacks)
        headline = model_headline(
            result,
            sanity,
            training,
            tgt=tgt,
            pool_key=pool_key,
            dataset_version=snapshot.version,
            contract=contract,
            n_missing=n_missing,
            members=members,
            matched=matched,
        )
        store.finish_model_audit(audit_id, headline)
    out_dir = model_audit_report_dir(cfg.results_dir, snapshot.dataset, audit_id)
    files = write_model_audit_report(
        result, out_dir, title=name, audit_id=audit_id, min_cell=cfg.report.min_cell, threshold=cfg.report.risk_threshold, headline=headline
    )
    at_risk = (headline["n_member_patients_at_risk"], headline["n_member_patients"], headline["n_member_patients_significant"])
    logger.info("audited %s (%s): %d of %d member patients at risk, %d significant at FDR %g", name, kind, *at_risk, tgt.fdr)
    publish_headline(name, cfg.dataset, pool_key, headline, files)
    return {
        "audit_id": audit_id,
        "target_name": name,
        "pool_key": pool_key,
        "dataset_version": snapshot.version,
        "headline": headline,
        "db_path": str(cfg.db_path),
        "report_dir": str(out_dir),
        "files": {k: str(v) for k, v in files.items()},
    }


def run_audit_model(cfg: AuditConfig, show_progress: bool = True) -> dict[str, Any]:
    """Run :func:`audit_model_flow` with the config's Dask task runner."""
    from flows.runtime import run_on_dask

    return run_on_dask(audit_model_flow, cfg, show_progress)

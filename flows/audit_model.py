"""The flow of `medaudit audit-model`: audit an existing model with few reference models.

ingest -> reference pool (trained on Dask, reused if stored) -> score the audited model (or read its
exported logits) -> offline LiRA / RMIA / LOSS -> record, patient and subgroup risk -> DuckDB + report.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.audit import ingest_snapshot, pool_key_for, train_pool
from tasks.config import AuditConfig
from tasks.errors import ConfigError
from tasks.pseudonym import load_or_create_secret
from tasks.report import figure_b64
from tasks.steps import score_target_model_task
from tasks.storage import AuditStore
from tasks.target_audit import analyze_target, reference_arrays
from tasks.target_model import file_digest, read_logits, read_members
from tasks.target_report import attacks_frame_for_store, target_rows, write_target_report


@flow(name="medaudit-audit-model", log_prints=True)
def audit_model_flow(config: dict[str, Any], show_progress: bool = True) -> dict[str, Any]:
    """Audit one existing model; ``config`` is an AuditConfig (with ``target``) as a dict."""
    cfg = AuditConfig.model_validate(config)
    if cfg.target is None:
        raise ConfigError("audit-model needs a target (model_path or logits_path, and members_path)")
    tgt = cfg.target
    logger = get_run_logger()
    snapshot = ingest_snapshot(cfg, show_progress=show_progress)
    member = read_members(tgt.members_path, snapshot.records, snapshot.dataset, load_or_create_secret())
    pool_key, n_views = pool_key_for(cfg, snapshot)
    source = tgt.model_path or tgt.logits_path
    if tgt.logits_path:
        kind = "logits"
    else:
        kind = "state_dict" if tgt.architecture else ("torch_export" if Path(tgt.model_path).suffix == ".pt2" else "torchscript")
    name = tgt.name or Path(source).name
    with AuditStore(cfg.db_path) as store:
        store.register_snapshot(snapshot)
        training = train_pool(cfg, snapshot, store, pool_key, n_views, show_progress=show_progress)
        models = list(range(cfg.pool.n_models))
        if tgt.logits_path:
            logits = read_logits(tgt.logits_path, snapshot.records, snapshot.task, n_views)
        else:
            logits = score_target_model_task(
                str(tgt.model_path), str(snapshot.path), member, tgt.model_dump(mode="json"), n_views, cfg.pool.seed
            )
        audit_id = uuid.uuid4().hex[:12]
        store.start_target_audit(
            audit_id,
            {
                "pool_key": pool_key,
                "dataset": cfg.dataset,
                "dataset_version": snapshot.version,
                "target_name": name,
                "target_kind": kind,
                "target_digest": file_digest(Path(source)),
                "members_digest": file_digest(tgt.members_path),
                "n_references": len(models),
                "variance": tgt.variance,
                "config": cfg.model_dump(mode="json"),
                "flow_run_id": str(flow_run.id or ""),
            },
        )
        ref_scores, ref_probs, ref_in = reference_arrays(store, snapshot, pool_key, models, n_views)
        result = analyze_target(
            snapshot, logits, member, ref_scores, ref_probs, ref_in, variance=tgt.variance, attack=cfg.attack, report=cfg.report
        )
        keys = {"audit_id": audit_id}
        store.insert_frame("target_record_stats", result.records.assign(**keys))
        attrs = list(snapshot.attributes)
        pats = result.patients
        attributes = [dict(zip(attrs, v, strict=True)) for v in pats[attrs].itertuples(index=False)] if attrs else [{}] * len(pats)
        store.insert_frame(
            "target_patient_stats",
            pats[["patient_key", "member", "n_records", "n_member_records", "risk", "risk_mean"]].assign(**keys, attributes=attributes),
        )
        store.insert_frame("target_attack_results", attacks_frame_for_store(result.attacks, list(cfg.attack.fpr_points)).assign(**keys))
        headline = {**result.headline, **training, "pool_key": pool_key, "dataset_version": snapshot.version, "target_kind": kind}
        store.finish_target_audit(audit_id, headline)
    out_dir = cfg.results_dir / "reports" / snapshot.dataset / f"model-{audit_id}"
    files = write_target_report(
        result, out_dir, title=name, audit_id=audit_id, min_cell=cfg.report.min_cell, threshold=cfg.report.risk_threshold
    )
    logger.info(
        "audited %s (%s): %d of %d member patients at risk",
        name,
        kind,
        headline["n_member_patients_at_risk"],
        headline["n_member_patients"],
    )
    create_markdown_artifact(
        key="model-audit-headline",
        markdown=(
            f"# Privacy audit of {name}\n\n{cfg.dataset} · reference pool `{pool_key}`\n\n| measure | value |\n|---|---|\n"
            + "".join(f"| {k} | {v} |\n" for k, v in target_rows(headline))
            + f"\n![risk]({figure_b64(files['risk_png'])})\n"
        ),
        description="Existing model: patients at risk against chance, offline attacks",
    )
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

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

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.audit import ingest_snapshot, train_pool
from flows.steps import score_target_model_task
from tasks.audit.model_audit import analyze_target, reference_arrays
from tasks.audit.model_inputs import check_input_columns
from tasks.audit.model_loading import ParsedLogits, align_logits, file_digest, match_members, parse_logits, parse_members, preflight_model
from tasks.audit.model_sanity import baseline_metric, sanity_check
from tasks.config import AuditConfig
from tasks.datasets import get_dataset
from tasks.errors import ConfigError
from tasks.ingest.pseudonym import load_or_create_secret
from tasks.report.model_audit import attacks_frame_for_store, target_rows, write_target_report
from tasks.report.pool_audit import figure_b64
from tasks.results_layout import model_audit_report_dir
from tasks.storage.store import AuditStore
from tasks.training.pool import pool_key_for


def _identifiers(adapter: Any) -> set[str]:
    try:
        return {c for t in adapter.contract.tables.values() for c in t.identifiers}
    except Exception:  # an adapter without a contract file
        return set()


def _verdict(result: Any) -> dict[str, Any]:
    """The headline numbers that say how a verdict came out (for comparing two reference pools)."""
    h = result.headline
    keys = (
        "n_member_patients_at_risk",
        "expected_by_chance",
        "excess_patients_at_risk",
        "excess_patients_at_risk_ci",
        "n_member_patients_significant",
        "members_above_non_members_p",
        "share_non_member_patients_at_risk",
        "lira_offline_auc",
        "calibration_far_from_uniform",
    )
    return {k: h.get(k) for k in keys}


def preflight(cfg: AuditConfig) -> tuple[Any, ParsedLogits | None, str]:
    """Everything checkable before ingest (seconds; the CLI runs it before starting Dask too): the members
    file, the logits file completely, or the model loaded and run on one batch of its input contract.
    Returns (members frame, parsed logits or None, the input contract in words)."""
    tgt = cfg.target
    if tgt is None:
        raise ConfigError("audit-model needs a target (model_path or logits_path, and members_path)")
    adapter = get_dataset(cfg.dataset, cfg.dataset_options)
    task = adapter.task
    members_frame = parse_members(tgt.members_path)
    if tgt.logits_path:
        views = cfg.pool.eval_views if task.modality == "image" else 1  # as pool_key_for will say
        parsed = parse_logits(tgt.logits_path, task, views, tgt.logit_columns)
        return members_frame, parsed, f"exported logits, {parsed.note}"
    if tgt.input_columns:
        check_input_columns(tgt.input_columns, cfg.raw_dir, adapter.layout, _identifiers(adapter))
    return members_frame, None, preflight_model(tgt.model_dump(mode="json"), task, cfg.dataset)


@flow(name="medaudit-audit-model", log_prints=True)
def audit_model_flow(config: dict[str, Any], show_progress: bool = True) -> dict[str, Any]:
    """Audit one existing model; ``config`` is an AuditConfig (with ``target``) as a dict.

    Order matters to the user: every input file and the model's input width are checked before
    ingest; members and logits are matched and the model's own task metric gated before any
    reference model is trained."""
    cfg = AuditConfig.model_validate(config)
    if cfg.target is None:
        raise ConfigError("audit-model needs a target (model_path or logits_path, and members_path)")
    tgt = cfg.target
    target = tgt.model_dump(mode="json")
    logger = get_run_logger()
    members_frame, parsed, contract = preflight(cfg)
    snapshot = ingest_snapshot(cfg, show_progress=show_progress)
    members = match_members(members_frame, tgt.members_path, snapshot.records, snapshot.dataset, load_or_create_secret())
    member = members.member
    warning = members.warning(tgt.members_path)
    if warning:
        logger.warning(warning)
    pool_key, n_views = pool_key_for(cfg, snapshot)
    if parsed is not None:
        logits, n_missing = align_logits(parsed, snapshot.records, n_views, allow_missing=tgt.allow_missing)
        if n_missing:
            logger.warning("%d of %d records have no logits (--allow-missing): left out of the audit", n_missing, len(member))
    else:
        logits = score_target_model_task(str(tgt.model_path), str(snapshot.path), member, target, n_views, cfg.pool.seed, str(cfg.raw_dir))
        n_missing = 0
    labels = snapshot.labels()
    baseline = baseline_metric(snapshot.inputs(), labels, member, snapshot.task) if snapshot.task.modality == "tabular" else float("nan")
    sanity = sanity_check(
        logits,
        labels,
        member,
        snapshot.task,
        min_auroc=tgt.min_auroc,
        force=tgt.force,
        baseline=baseline,
        max_baseline_gap=tgt.max_baseline_gap,
    )
    if sanity["sanity_forced"]:
        logger.warning(
            "sanity gate overridden (--force): the model's %s on its non-members is %.3f, below %.3f",
            sanity["sanity_metric"],
            sanity["sanity_non_members"],
            sanity["sanity_floor"],
        )

    source = tgt.model_path or tgt.logits_path
    if tgt.logits_path:
        kind = "logits"
    else:
        kind = "state_dict" if tgt.architecture else ("torch_export" if Path(tgt.model_path).suffix == ".pt2" else "torchscript")
    name = tgt.name or Path(source).name
    models = list(range(cfg.pool.n_models))
    with AuditStore(cfg.db_path) as store:
        store.register_snapshot(snapshot)
        training = train_pool(cfg, snapshot, store, pool_key, n_views, show_progress=show_progress)
        audit_id = uuid.uuid4().hex[:12]
        store.start_model_audit(
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
        kw = {"variance": tgt.variance, "attack": cfg.attack, "report": cfg.report, "fdr": tgt.fdr}
        result = analyze_target(snapshot, logits, member, ref_scores, ref_probs, ref_in, **kw)
        matched = None
        if tgt.reference_recipe is not None:
            # references trained like the audited model: how much the verdict depends on the reference recipe
            cfg_m = cfg.model_copy(update={"pool": cfg.pool.model_copy(update={"recipe": tgt.reference_recipe})})
            key_m, _ = pool_key_for(cfg_m, snapshot)
            trained_m = train_pool(cfg_m, snapshot, store, key_m, n_views, show_progress=show_progress)
            res_m = analyze_target(snapshot, logits, member, *reference_arrays(store, snapshot, key_m, models, n_views), **kw)
            matched = {"pool_key": key_m, "trained": trained_m.get("trained", 0), "recipe": tgt.reference_recipe.model_dump(mode="json")}
            matched |= _verdict(res_m)
        keys = {"audit_id": audit_id}
        store.insert_frame("model_audit_record_stats", result.records.assign(**keys))
        attrs = list(snapshot.attributes)
        pats = result.patients
        attributes = [dict(zip(attrs, v, strict=True)) for v in pats[attrs].itertuples(index=False)] if attrs else [{}] * len(pats)
        cols = ["patient_key", "member", "n_records", "n_member_records", "risk", "risk_mean", "p_value", "q_value"]
        store.insert_frame("model_audit_patient_stats", pats[cols].assign(**keys, attributes=attributes))
        store.insert_frame(
            "model_audit_attack_results", attacks_frame_for_store(result.attacks, list(cfg.attack.fpr_points)).assign(**keys)
        )
        headline = {
            **result.headline,
            **sanity,
            **training,
            "pool_key": pool_key,
            "dataset_version": snapshot.version,
            "target_kind": kind,
            "input_contract": contract,
            "records_without_logits": n_missing,
            "members_excluded_at_ingest": len(members.excluded_lines),
            "members_excluded_lines": members.excluded_lines[:20],
            "matched_references": matched,
        }
        store.finish_model_audit(audit_id, headline)
    out_dir = model_audit_report_dir(cfg.results_dir, snapshot.dataset, audit_id)
    files = write_target_report(
        result, out_dir, title=name, audit_id=audit_id, min_cell=cfg.report.min_cell, threshold=cfg.report.risk_threshold, headline=headline
    )
    logger.info(
        "audited %s (%s): %d of %d member patients at risk, %d significant at FDR %g",
        name,
        kind,
        headline["n_member_patients_at_risk"],
        headline["n_member_patients"],
        headline["n_member_patients_significant"],
        tgt.fdr,
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

"""The plain steps around one model audit (`medaudit audit-model`) that flows/audit_model.py orchestrates.

The checks before ingest (``preflight``), the sanity gate on the model's own task metric, what the audited
model is called, and what the audit stores: its row of ``model_audits``, its record, patient and attack
tables, and its headline. The analysis itself is tasks/audit/model_audit.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.audit.model_audit import ModelAuditResult
from tasks.audit.model_inputs import check_input_columns
from tasks.audit.model_loading import Members, ParsedLogits, file_digest, parse_logits, parse_members, preflight_model
from tasks.audit.model_sanity import baseline_metric, sanity_check
from tasks.config import AuditConfig, AuditedModelConfig
from tasks.datasets import get_dataset
from tasks.errors import ConfigError
from tasks.ingest.snapshot import Snapshot
from tasks.storage.store import AuditStore

# the headline numbers that say how a verdict came out (to compare two reference pools)
VERDICT_KEYS = (
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
PATIENT_COLUMNS = ["patient_key", "member", "n_records", "n_member_records", "risk", "risk_mean", "p_value", "q_value"]


def require_target(cfg: AuditConfig) -> AuditedModelConfig:
    """The config's target, or a ConfigError saying audit-model needs one."""
    if cfg.target is None:
        raise ConfigError("audit-model needs a target (model_path or logits_path, and members_path)")
    return cfg.target


def _identifiers(adapter: Any) -> set[str]:
    try:
        return {c for t in adapter.contract.tables.values() for c in t.identifiers}
    except Exception:  # an adapter without a contract file
        return set()


def preflight(cfg: AuditConfig) -> tuple[Any, ParsedLogits | None, str]:
    """Everything checkable before ingest (seconds; the CLI runs it before starting Dask too): the members
    file, the logits file completely, or the model loaded and run on one batch of its input contract.
    Returns (members frame, parsed logits or None, the input contract in words)."""
    tgt = require_target(cfg)
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


def sanity_gate(logits: np.ndarray, snapshot: Snapshot, member: np.ndarray, tgt: AuditedModelConfig) -> dict[str, Any]:
    """The model's own task metric on its non-members against the floor (tasks/audit/model_sanity.py); on
    tabular data also against a simple baseline fitted on the members. logits (N, V, C), member (N,)."""
    labels = snapshot.labels()
    tabular = snapshot.task.modality == "tabular"
    baseline = baseline_metric(snapshot.inputs(), labels, member, snapshot.task) if tabular else float("nan")
    return sanity_check(
        logits,
        labels,
        member,
        snapshot.task,
        min_auroc=tgt.min_auroc,
        force=tgt.force,
        baseline=baseline,
        max_baseline_gap=tgt.max_baseline_gap,
    )


def model_kind(tgt: AuditedModelConfig) -> str:
    """How the audited model was handed in: logits, state_dict, torch_export (.pt2) or torchscript."""
    if tgt.logits_path:
        return "logits"
    return "state_dict" if tgt.architecture else ("torch_export" if Path(tgt.model_path).suffix == ".pt2" else "torchscript")


def model_name(tgt: AuditedModelConfig) -> str:
    """The audited model's name: the one given, else its file's name."""
    return tgt.name or Path(tgt.model_path or tgt.logits_path).name


def model_audit_row(cfg: AuditConfig, pool_key: str, dataset_version: str, flow_run_id: str) -> dict[str, Any]:
    """The audit's row of ``model_audits`` (but its times); the ``target_*`` columns describe the audited model."""
    tgt = require_target(cfg)
    return {
        "pool_key": pool_key,
        "dataset": cfg.dataset,
        "dataset_version": dataset_version,
        "target_name": model_name(tgt),
        "target_kind": model_kind(tgt),
        "target_digest": file_digest(Path(tgt.model_path or tgt.logits_path)),
        "members_digest": file_digest(tgt.members_path),
        "n_references": cfg.pool.n_models,
        "variance": tgt.variance,
        "config": cfg.model_dump(mode="json"),
        "flow_run_id": flow_run_id,
    }


def verdict(headline: dict[str, Any]) -> dict[str, Any]:
    """The VERDICT_KEYS of a model audit's headline."""
    return {k: headline.get(k) for k in VERDICT_KEYS}


def store_model_result(store: AuditStore, result: ModelAuditResult, audit_id: str, attributes: list[str], attacks: pd.DataFrame) -> None:
    """A model audit's record, patient (attributes as a MAP) and attack tables; ``attacks``: the rows of
    model_audit_attack_results but the audit id (tasks/report/model_audit.py attacks_frame_for_store)."""
    keys = {"audit_id": audit_id}
    store.insert_frame("model_audit_record_stats", result.records.assign(**keys))
    pats = result.patients
    maps = [dict(zip(attributes, v, strict=True)) for v in pats[attributes].itertuples(index=False)] if attributes else [{}] * len(pats)
    store.insert_frame("model_audit_patient_stats", pats[PATIENT_COLUMNS].assign(**keys, attributes=maps))
    store.insert_frame("model_audit_attack_results", attacks.assign(**keys))


def model_headline(
    result: ModelAuditResult,
    sanity: dict[str, Any],
    training: dict[str, int],
    *,
    tgt: AuditedModelConfig,
    pool_key: str,
    dataset_version: str,
    contract: str,
    n_missing: int,
    members: Members,
    matched: dict[str, Any] | None,
) -> dict[str, Any]:
    """The stored and printed headline: the analysis', the sanity gate's and the training's numbers and where they came from."""
    return {
        **result.headline,
        **sanity,
        **training,
        "pool_key": pool_key,
        "dataset_version": dataset_version,
        "target_kind": model_kind(tgt),
        "input_contract": contract,
        "records_without_logits": n_missing,
        "members_excluded_at_ingest": len(members.excluded_lines),
        "members_excluded_lines": members.excluded_lines[:20],
        "matched_references": matched,
    }

"""The audit flow: ingest -> validate -> masks -> shadow models on Dask -> DuckDB -> attacks -> report.

Orchestration only: every step is a plain function from tasks/ (design D18).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import dask
import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.runtime import flow_run
from tqdm.auto import tqdm

from flows.monitoring import audit_run_name, name_run, progress_text, step
from flows.steps import decode_chunk_task, train_shadow_model_task, train_shadow_models_task
from tasks.audit.pool_audit import AuditResult, analyze_pool, store_result
from tasks.config import AuditConfig
from tasks.datasets import get_dataset
from tasks.datasets.base import InputChunk
from tasks.errors import ConfigError
from tasks.ingest.cache import snapshot_unless_unchanged
from tasks.ingest.pseudonym import load_or_create_secret
from tasks.ingest.snapshot import Snapshot, build_snapshot
from tasks.report.pool_audit import chance_sentence, evidence_sentence, figure_b64, headline_rows, write_report
from tasks.report.tables import SUBGROUP_LEGEND, display_subgroups, with_current_audit
from tasks.results_layout import audit_report_dir, shards_dir
from tasks.risk.null import minimum_models
from tasks.storage.store import AuditStore, PoolRecord
from tasks.training.cost import describe_pool_compute
from tasks.training.masks import pool_masks
from tasks.training.pool import pool_key_for, training_patients
from tasks.training.pool_runner import TrainingTally, finished_shards, load_shard, missing_models, plan_tasks, pool_row, shadow_jobs


def _prefect_mapper(window: int = 4) -> Callable[[Callable, Iterable[Any]], Iterator[InputChunk]]:
    """Decode chunks on the task runner's workers, at most ``window`` in flight, results in order."""

    def mapper(fn: Callable, chunks: Iterable[Any]) -> Iterator[InputChunk]:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(decode_chunk_task.submit(fn, chunk))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    return mapper


def ingest_snapshot(cfg: AuditConfig, *, show_progress: bool = True) -> Snapshot:
    """Adapter -> contract validation -> quarantine -> pseudonymous, content-addressed snapshot."""
    adapter = get_dataset(cfg.dataset, cfg.dataset_options)
    bar = tqdm(total=0, desc=f"ingest {cfg.dataset}", unit="rec", disable=not show_progress, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    secret = load_or_create_secret()
    try:
        # an unchanged raw folder (tasks/ingest/cache.py: sizes, mtimes, edge hashes) reopens its snapshot
        snapshot, reused = snapshot_unless_unchanged(
            adapter,
            cfg.raw_dir,
            cfg.results_dir,
            secret,
            lambda: build_snapshot(adapter, cfg.raw_dir, cfg.results_dir, secret, mapper=_prefect_mapper(), progress=progress),
        )
    finally:
        bar.close()
    if reused:
        get_run_logger().info("raw folder unchanged since snapshot %s was built: not ingested again", snapshot.version)
    return snapshot


def open_or_ingest(cfg: AuditConfig, snapshot_dir: str | None, *, show_progress: bool = True) -> Snapshot:
    """The snapshot a caller has just ingested (``snapshot_dir``), else ``cfg``'s raw folder ingested now; logged."""
    logger = get_run_logger()
    if snapshot_dir:
        snapshot = Snapshot.open(Path(snapshot_dir))
        logger.info("using snapshot %s/%s ingested by the caller", snapshot.dataset, snapshot.version)
    else:
        logger.info("ingesting %s from %s (read, validate against the data contract, decode)", cfg.dataset, cfg.raw_dir)
        snapshot = ingest_snapshot(cfg, show_progress=show_progress)
    logger.info(
        "snapshot %s/%s: %s raw, %d accepted, %d quarantined",
        snapshot.dataset,
        snapshot.version,
        snapshot.n_raw,
        snapshot.n_accepted,
        snapshot.n_quarantined,
    )
    return snapshot


def check_pool_size(cfg: AuditConfig) -> None:
    """Refuse a pool the statistics cannot work with, before anything is trained (ConfigError naming the minimum)."""
    need = minimum_models(cfg.attack.min_models_per_side)
    if cfg.pool.n_models < need:
        raise ConfigError(
            f"pool.n_models={cfg.pool.n_models} is too small: at least {need} models are needed. Each record needs "
            f"{cfg.attack.min_models_per_side} models per side (attack.min_models_per_side) plus one for its spread, and the null "
            "that says how much risk chance alone produces swaps IN/OUT within complementary pairs: with 2 pairs a record's null "
            "has 4 patterns, two the mirror images of the other two, so no record can stand out from chance. "
            "For trustworthy verdicts use 16 or more (docs/STATISTICS.md)"
        )


def train_pool(
    cfg: AuditConfig, snapshot: Snapshot, store: AuditStore, pool_key: str, n_views: int, *, show_progress: bool = True
) -> dict[str, int]:
    """Train the models the pool lacks (design D19) on the task runner; the flow process is the only writer.

    Recovery, the task plan and the failure policy are tasks/training/pool_runner.py."""
    logger = get_run_logger()
    train_idx, order, codes = training_patients(snapshot.records)
    store.ensure_pool(PoolRecord(**pool_row(cfg, snapshot, pool_key, n_views, len(order))), order)
    masks = pool_masks(len(order), cfg.pool.seed, cfg.pool.n_models)
    store.store_masks(pool_key, masks)
    shard_dir = shards_dir(cfg.results_dir, pool_key)
    load = partial(
        load_shard, labels=snapshot.labels(), transform=snapshot.task.score_transform, store_shard=partial(store.load_model_shard, pool_key)
    )
    recovered = sum(load(meta) for meta in finished_shards(shard_dir))  # shards finished but not loaded when the last run stopped
    complete = store.completed_models(pool_key)
    missing = missing_models(cfg.pool.n_models, complete)
    logger.info("pool %s: %d models stored, %d recovered from shards, %d to train", pool_key, len(complete), recovered, len(missing))
    if not missing:
        return {"trained": 0, "recovered": recovered, "failed": 0}

    progress_id = create_progress_artifact(
        progress=0.0, key="shadow-training-progress", description=f"pool {pool_key}: " + progress_text(0, len(missing), 0.0)
    )
    started = time.monotonic()
    jobs = shadow_jobs(cfg, snapshot, pool_key, n_views, masks, train_idx, codes, missing, shard_dir)
    arch = cfg.pool.architecture
    logger.info(
        "%s", describe_pool_compute(snapshot.task, arch.name, dict(arch.params), cfg.pool.recipe, [len(j.member_records) for j in jobs])
    )
    plan = plan_tasks(jobs, cfg.execution.models_per_task)
    if plan.not_batched:
        logger.info(
            "models_per_task=%d not used for pool %s: %s; one task per model", cfg.execution.models_per_task, pool_key, plan.not_batched
        )
    futures, chunk_size = [], {}
    resources = cfg.execution.training_resources
    # tasks claim their resources (e.g. a GPU) so Dask places them only on workers that offer them
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        for chunk in plan.chunks:
            fut = train_shadow_models_task.submit(chunk) if plan.batched else train_shadow_model_task.submit(chunk[0])
            futures.append(fut)
            chunk_size[fut.task_run_id] = len(chunk)
    tally = TrainingTally(len(missing), shard_dir)
    with tqdm(total=len(missing), desc="shadow models", unit="model", disable=not show_progress) as bar:
        for fut in as_completed(futures):
            n = chunk_size[fut.task_run_id]
            try:
                result = fut.result()
            except Exception as exc:  # the policy: keep the models that did finish, stop on a disk error
                tally.failed(exc, n)
                logger.error("%s failed: %s", "a shadow model" if n == 1 else f"a task of {n} shadow models", exc)
            else:
                tally.stored(n, sum(load(meta) for meta in (result if isinstance(result, list) else [result])))
            bar.update(n)
            status = progress_text(tally.finished - tally.n_failed, len(missing), time.monotonic() - started, tally.n_failed)
            update_progress_artifact(progress_id, progress=100.0 * tally.finished / len(missing), description=f"pool {pool_key}: {status}")
            logger.info("%s", status)
    tally.raise_if_failed()
    return {"trained": tally.trained, "recovered": recovered, "failed": 0}


def publish_artifacts(result: AuditResult, files: dict[str, Path], cfg: AuditConfig, pool_key: str) -> None:
    """Prefect artifacts: headline numbers, subgroup table (small cells suppressed, key columns first, sorted by
    significance), risk plots, risk over time."""
    h = result.headline
    create_markdown_artifact(
        key="audit-headline",
        markdown=(
            f"# Privacy audit: {cfg.dataset}\n\npool `{pool_key}` · {h['n_models']} models · {h['n_patients']} patients\n\n"
            "| measure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in headline_rows(h)) + "\n"
            f"{chance_sentence(h)} {evidence_sentence(h)}\n\n"
            f"![risk survival]({figure_b64(files['survival_png'])})\n\n"
            f"![SE vs number of models]({figure_b64(files['se_png'])})\n"
        ),
        description="Headline numbers, risk survival curve and SE vs number of models",
    )
    table = display_subgroups(pd.read_csv(files["subgroup_csv"], keep_default_na=False, na_values=[""]), cfg.report.min_cell)
    legend = SUBGROUP_LEGEND.format(threshold=cfg.report.risk_threshold, top=100 * cfg.report.top_fraction, k=cfg.report.min_cell)
    create_table_artifact(
        key="subgroup-risk",
        table=json.loads(table.to_json(orient="records")),
        description=f"Patient-level subgroup risk. {legend}",
    )
    if "history_png" in files:
        create_markdown_artifact(
            key="risk-over-time",
            markdown=f"# Risk over time: {cfg.dataset}\n\n![risk over time]({figure_b64(files['history_png'])})\n",
            description="Share of patients at risk over the audits of this dataset",
        )
    if not result.exposure_tests.empty:
        create_table_artifact(
            key="exposure-factors",
            table=json.loads(result.exposure_tests.round(4).to_json(orient="records")),
            description="Who is exposed and why: rare labels and the most atypical decile among the exposed (one-sided Fisher)",
        )


@flow(name="medaudit-audit", log_prints=True, flow_run_name=audit_run_name)
def audit_flow(config: dict[str, Any], show_progress: bool = True, snapshot_dir: str | None = None) -> dict[str, Any]:
    """Audit one dataset end to end; ``config`` is an AuditConfig as a dict. Returns the headline and paths.

    ``snapshot_dir``: a snapshot the caller has just ingested from ``config``'s raw folder (a re-audit), used
    as is instead of reading and decoding the raw files a second time."""
    cfg = AuditConfig.model_validate(config)
    check_pool_size(cfg)
    logger = get_run_logger()
    snapshot = open_or_ingest(cfg, snapshot_dir, show_progress=show_progress)
    pool_key, n_views = pool_key_for(cfg, snapshot)
    with AuditStore(cfg.db_path) as store:
        store.register_snapshot(snapshot)
        audit_id = uuid.uuid4().hex[:12]
        name_run(f"{cfg.dataset} · pool {pool_key} · audit {audit_id}", ["medaudit", f"dataset:{cfg.dataset}", f"pool:{pool_key}"])
        training = train_pool(cfg, snapshot, store, pool_key, n_views, show_progress=show_progress)
        models = list(range(cfg.pool.n_models))
        store.start_audit(
            audit_id,
            pool_key,
            cfg.dataset,
            snapshot.version,
            len(models),
            cfg.pool.n_targets,
            cfg.model_dump(mode="json"),
            str(flow_run.id or ""),
        )
        with tqdm(total=0, desc="attacks", unit="rec", disable=not show_progress, leave=False) as bar:

            def progress(done: int, total: int) -> None:
                bar.total, bar.n = total, done
                bar.refresh()

            # one task for record statistics, the swap null (chance levels), attacks and subgroups
            # (tasks/audit/pool_audit.py): the null streams over the same record blocks as the statistics
            result = step("statistics, attacks, subgroups")(analyze_pool)(
                store, snapshot, pool_key, models, cfg.pool.n_targets, n_views, cfg.attack, cfg.report, progress=progress
            )
        step("store results")(store_result)(store, result, audit_id, pool_key, list(snapshot.attributes))
        out_dir = audit_report_dir(cfg.results_dir, snapshot.dataset, audit_id)
        history = with_current_audit(store.risk_history(cfg.dataset), result.headline, audit_id, pool_key, len(models))
        files = step("report")(write_report)(
            result,
            out_dir,
            dataset=snapshot.dataset,
            pool_key=pool_key,
            audit_id=audit_id,
            min_cell=cfg.report.min_cell,
            threshold=cfg.report.risk_threshold,
            history=history,
        )
        headline = {**result.headline, **training, "dataset_version": snapshot.version, "pool_key": pool_key}
        store.finish_audit(audit_id, headline)
    step("artifacts")(publish_artifacts)(result, files, cfg, pool_key)
    logger.info("audit %s finished: report %s", audit_id, files["report_html"])
    return {
        "audit_id": audit_id,
        "pool_key": pool_key,
        "dataset_version": snapshot.version,
        "headline": headline,
        "n_raw": snapshot.n_raw,
        "n_accepted": snapshot.n_accepted,
        "n_quarantined": snapshot.n_quarantined,
        "db_path": str(cfg.db_path),
        "report_dir": str(out_dir),
        "files": {k: str(v) for k, v in files.items()},
    }


def run_audit(cfg: AuditConfig, show_progress: bool = True, snapshot_dir: str | None = None) -> dict[str, Any]:
    """Run the audit flow with a Dask task runner built from the config's execution settings (``snapshot_dir``: see audit_flow)."""
    from prefect import tags

    from flows.runtime import run_on_dask

    check_pool_size(cfg)  # before a Dask cluster starts
    with tags("medaudit", f"dataset:{cfg.dataset}"):
        return run_on_dask(audit_flow, cfg, show_progress, snapshot_dir=snapshot_dir)

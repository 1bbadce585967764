"""Running a pool's training, as plain functions the audit flow orchestrates (flows/audit.py:train_pool).

Which models a pool still lacks, recovering the shards a stopped run finished but never loaded, the shadow
jobs of the missing models and how they are grouped into tasks, and the failure policy: a task that fails
after its retry is counted and the models that did finish are kept, so a rerun trains only what is missing;
an OS error with an errno (a full results disk, a folder that cannot be written) stops the run at once,
because every later model would fail alike. No Prefect, Dask or DuckDB here: the flow submits the tasks and
the store writes (through the ``store_shard`` callable it hands in).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.attacks.scores import score_and_probability
from tasks.config import AuditConfig
from tasks.errors import MedauditError
from tasks.ingest.snapshot import Snapshot
from tasks.training.batched import batching_blocker
from tasks.training.masks import model_seed
from tasks.training.shadow import TRAINING_CODE_VERSION, ShadowJob

# store_shard(model_idx, shard, meta, scores (N, V), probs (N, V), flags (N,)) -> True when newly stored
StoreShard = Callable[[int, Path, dict[str, Any], np.ndarray, np.ndarray, np.ndarray], bool]


def pool_row(cfg: AuditConfig, snapshot: Snapshot, pool_key: str, n_views: int, n_patients: int) -> dict[str, Any]:
    """The pool's row of the ``pools`` table (the fields of tasks/storage/store.py PoolRecord)."""
    arch = cfg.pool.architecture
    return {
        "pool_key": pool_key,
        "dataset": snapshot.dataset,
        "dataset_version": snapshot.version,
        "architecture": arch.name,
        "arch_params": arch.params,
        "recipe": cfg.pool.recipe.model_dump(mode="json"),
        "mask_seed": cfg.pool.seed,
        "eval_views": n_views,
        "n_targets": cfg.pool.n_targets,
        "score_transform": snapshot.task.score_transform,
        "code_version": TRAINING_CODE_VERSION,
        "n_patients": n_patients,
        "recipe_preset": cfg.pool.recipe_preset,
    }


def transform_shard(meta: dict[str, Any], labels: np.ndarray, transform: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shard's logits (N, V, C) -> (scores (N, V), probabilities (N, V), flags (N,)) under the dataset's score transform."""
    import pyarrow.parquet as pq

    col = pq.read_table(meta["shard"], columns=["logits"]).column("logits").combine_chunks()
    logits = col.values.to_numpy(zero_copy_only=False).reshape(len(col), meta["n_views"], meta["n_outputs"])
    return score_and_probability(transform, logits, labels)


def load_shard(meta: dict[str, Any], labels: np.ndarray, transform: str, store_shard: StoreShard) -> bool:
    """Store one finished shard (logits transformed) and delete its files; True when the model was newly stored."""
    scores, probs, flags = transform_shard(meta, labels, transform)
    stored = store_shard(meta["model_idx"], Path(meta["shard"]), meta, scores, probs, flags)
    Path(meta["shard"]).unlink(missing_ok=True)
    Path(meta["shard"]).with_suffix(".json").unlink(missing_ok=True)
    return stored


def finished_shards(shard_dir: Path) -> list[dict[str, Any]]:
    """Metas of the shards a stopped run finished but did not load, by model index.

    tasks/training/shadow.py:write_shard writes the JSON first and moves the Parquet shard into place last,
    so a shard whose JSON sits beside it is complete; a JSON without its shard is a model still unfinished.
    """
    shards = sorted(shard_dir.glob("model_*.parquet")) if shard_dir.exists() else []
    return [json.loads(s.with_suffix(".json").read_text()) for s in shards if s.with_suffix(".json").exists()]


def missing_models(n_models: int, complete: Iterable[int]) -> list[int]:
    """Model indices of a pool of ``n_models`` not yet stored, ascending."""
    done = set(complete)
    return [m for m in range(n_models) if m not in done]


def shadow_jobs(
    cfg: AuditConfig,
    snapshot: Snapshot,
    pool_key: str,
    n_views: int,
    masks: np.ndarray,
    train_idx: np.ndarray,
    codes: np.ndarray,
    models: list[int],
    shard_dir: Path,
) -> list[ShadowJob]:
    """One job per model in ``models``: it trains on the records of the patients its mask (n_models, n_patients)
    puts IN; ``train_idx`` (N,) are the training records and ``codes`` (N,) their patients' columns of the mask."""
    arch = cfg.pool.architecture
    return [
        ShadowJob(
            pool_key,
            m,
            model_seed(cfg.pool.seed, m),
            str(snapshot.path),
            arch.name,
            dict(arch.params),
            cfg.pool.recipe.model_dump(mode="json"),
            n_views,
            train_idx[masks[m][codes]],
            str(shard_dir),
            cfg.execution.torch_threads,
            cfg.execution.device,
            fast_path=cfg.execution.fast_path,
            compile=cfg.execution.compile,
        )
        for m in models
    ]


@dataclass(frozen=True)
class TaskPlan:
    """The jobs grouped into tasks: ``batched`` tasks train a list of jobs together (execution.models_per_task > 1),
    otherwise each task trains one job. ``not_batched`` says why models_per_task > 1 was not used."""

    chunks: list[list[ShadowJob]]
    batched: bool
    not_batched: str | None = None


def plan_tasks(jobs: list[ShadowJob], models_per_task: int) -> TaskPlan:
    """Chunks of ``models_per_task`` jobs where tasks/training/batched.py can train them together; one task per
    job where it cannot (DP-SGD, image models, ...), which keeps the workers busy instead."""
    per_task, why = models_per_task, None
    if per_task > 1 and len(jobs) > 1 and (why := batching_blocker(jobs)) is not None:
        per_task = 1
    return TaskPlan([jobs[start : start + per_task] for start in range(0, len(jobs), per_task)], per_task > 1, why)


@dataclass
class TrainingTally:
    """Counts of a pool's training as its tasks finish, and the failure policy (module docstring)."""

    n_missing: int  # models this run trains
    shard_dir: Path
    trained: int = 0  # newly stored models
    finished: int = 0  # models whose task ended, stored or failed (a disabled progress bar counts nothing)
    n_failed: int = 0
    failures: list[str] = field(default_factory=list)

    def stored(self, n_models: int, n_new: int) -> None:
        """A task of ``n_models`` models finished; ``n_new`` of them were newly stored."""
        self.trained += n_new
        self.finished += n_models

    def failed(self, exc: BaseException, n_models: int) -> None:
        """A task of ``n_models`` models failed after its retry: counted, or MedauditError for an OS error with an errno."""
        if isinstance(exc, OSError) and exc.errno is not None:
            raise MedauditError(
                f"{exc.filename or self.shard_dir}: a shadow-model task failed after its retry: {exc.strerror or exc}; the models "
                "stored so far are kept: make room (or fix the folder) and rerun to train only the missing ones"
            ) from exc
        self.failures.append(f"{type(exc).__name__}: {exc}")
        self.n_failed += n_models
        self.finished += n_models

    def raise_if_failed(self) -> None:
        """After the last task: MedauditError naming the first failure when any model failed."""
        if self.failures:
            raise MedauditError(
                f"{self.n_failed} of {self.n_missing} shadow models failed (first: {self.failures[0]}); "
                f"the {self.trained} finished ones are stored: rerun to train only the missing models"
            )

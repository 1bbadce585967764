"""Training and scoring one shadow model (plain functions; the flow ships them to Dask workers).

A model is trained on the records of its IN patients with its own seed (design D7), then scores *every*
record (train and test split) in V evaluation views with float32 outputs (design D8). The logits go to an
atomically written Parquet shard that the flow's single DuckDB writer loads (design D10).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from tasks.config import TrainRecipe
from tasks.datasets.base import TaskSpec
from tasks.ingest.snapshot import Snapshot
from tasks.training.augment import augment
from tasks.training.loop import Ema, accumulate_gradients, lr_factor, make_optimizer, optimizer_step, task_loss, training_targets

# Bump when a change alters what a trained model or its logits would be: it is part of the pool key.
TRAINING_CODE_VERSION = "2"  # 2: per-sample torchvision v2 augmentation (tasks/training/augment.py); bf16 models scored under bf16


@dataclass(frozen=True)
class ShadowJob:
    """Everything one worker needs to train and score model ``model_idx`` of a pool (picklable)."""

    pool_key: str
    model_idx: int
    seed: int
    snapshot_dir: str
    architecture: str
    arch_params: dict[str, Any]
    recipe: dict[str, Any]
    eval_views: int
    member_records: np.ndarray = field(repr=False)  # record_idx of the training records it sees
    shard_dir: str = ""
    torch_threads: int = 1
    device: str = "cpu"
    # execution.fast_path / execution.compile (tasks/training/fast.py); not part of the pool key
    fast_path: bool | str = False  # True, False or "auto" (on where the device is CUDA)
    compile: str = "off"  # "on", "off" or "auto" (on where the device is CUDA)


def on_for_device(setting: bool | str, device: str) -> bool:
    """``execution.fast_path`` (True/False/"auto") or ``execution.compile`` ("on"/"off"/"auto") on ``device``:
    on as given; "auto" on where the device is CUDA."""
    return setting is True or setting == "on" or (setting == "auto" and device.startswith("cuda"))


@lru_cache(maxsize=2)
def snapshot_arrays(snapshot_dir: str) -> tuple[Snapshot, np.ndarray, np.ndarray, np.ndarray]:
    """Per-process cache: (snapshot, inputs (N, *shape), labels (N, C), is_test (N,))."""
    snap = Snapshot.open(Path(snapshot_dir))
    return snap, snap.inputs(), snap.labels(), (snap.records["split"] == "test").to_numpy()


def eval_views(x: torch.Tensor, n_views: int, task: TaskSpec, seed: int) -> list[torch.Tensor]:
    """The V deterministic evaluation views of a batch (design D8): identity, flip (if label-preserving),
    then seeded "weak" augmentations (tasks/training/augment.py: each record its own flip and shift, fixed by
    ``seed``). Non-image inputs have a single view."""
    if x.dim() != 4 or n_views == 1:
        return [x]
    views = [x]
    if task.flip_views_ok:
        views.append(x.flip(-1))
    gen = torch.Generator().manual_seed(seed)
    while len(views) < n_views:
        views.append(augment(x, "weak", gen))
    return views[:n_views]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class _PerSampleLoss(nn.Module):
    """Loss per training row (N,), for DP-SGD's per-unit clipping."""

    def __init__(self, task: TaskSpec):
        super().__init__()
        self.task = task
        self.fn = nn.CrossEntropyLoss(reduction="none") if task.kind == "multiclass" else nn.BCEWithLogitsLoss(reduction="none")

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.fn(out, training_targets(y, self.task))
        return loss if loss.dim() == 1 else loss.sum(dim=1)


def train_model(
    x: np.ndarray,
    y: np.ndarray,
    task: TaskSpec,
    architecture: str,
    arch_params: dict[str, Any],
    recipe: TrainRecipe,
    seed: int,
    device: str = "cpu",
    units: np.ndarray | None = None,
    *,
    fast_path: bool = False,
    compile: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model on (x (n, *shape) float32, y (n, C) float) and return it with training stats.

    With ``recipe.dp_epsilon`` set, trains with DP-SGD (tasks/training/dp.py); ``units`` (n,) are then the
    patient codes of the rows for patient-level DP (ignored for record-level DP). ``fast_path`` trains
    the same recipe through tasks/training/fast.py where it covers it (``compile``: under torch.compile).
    """
    from models import build_model

    if fast_path:
        from tasks.training.fast import fast_path_blocker, resident_inputs, train_model_fast

        if fast_path_blocker(recipe, task) is None:
            data = resident_inputs(x, device)
            return train_model_fast(data, np.arange(len(x)), y, task, architecture, arch_params, recipe, seed, compile=compile)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(architecture, task.input_shape, task.n_outputs, task.modality, **arch_params).to(device)
    if recipe.channels_last and x.ndim == 4:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, recipe)
    ema = Ema(model, recipe.ema_decay) if recipe.ema_decay else None
    loss_fn = task_loss(task)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    n = len(xt)
    if recipe.dp_epsilon is not None:
        from tasks.training.dp import train_dp

        dp_units = units if recipe.dp_unit == "patient" and units is not None else np.arange(n)
        if recipe.dp_unit == "patient" and units is None:
            raise ValueError("patient-level DP needs the patient of every training row")
        n_units = len(np.unique(dp_units))
        batch_units = max(1, round(recipe.batch_size * n_units / n))  # same expected rows per step
        dp = train_dp(
            model,
            xt,
            yt,
            _PerSampleLoss(task),
            dp_units,
            epsilon=recipe.dp_epsilon,
            delta=recipe.dp_delta,
            clip_norm=recipe.dp_clip_norm,
            batch_units=batch_units,
            epochs=recipe.epochs,
            lr_at=lambda step, total: recipe.learning_rate * lr_factor(step, total, recipe),
            momentum=recipe.momentum,
            seed=seed,
            unit_name=recipe.dp_unit,
        )
        return model, {"train_loss": float("nan"), "steps": dp.steps, "dp": dp.as_dict()}
    bs = min(recipe.batch_size, n)
    steps_per_epoch = max(n // bs, 1)
    total = steps_per_epoch * recipe.epochs // recipe.grad_accum_steps
    step, last_loss = 0, float("nan")
    model.train()
    for _epoch in range(recipe.epochs):
        perm = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * bs : (b + 1) * bs]
            xb = augment(xt[idx], recipe.augment, gen).to(device)
            loss = accumulate_gradients(model, xb, yt[idx].to(device), loss_fn, task, recipe)
            if (b + 1) % recipe.grad_accum_steps:
                continue
            optimizer_step(opt, params, recipe, step, total)
            step += 1
            last_loss = loss.item() * recipe.grad_accum_steps
            if not math.isfinite(last_loss):
                raise FloatingPointError(f"training diverged (loss {last_loss}) at step {step}; lower the learning rate")
            if ema is not None:
                ema.update()
    if ema is not None:
        ema.copy_to_model()
    return model, {"train_loss": last_loss, "steps": step}


@torch.no_grad()
def score_model(
    model: nn.Module,
    x: np.ndarray | Any,
    task: TaskSpec,
    n_views: int,
    seed: int,
    device: str = "cpu",
    batch_size: int = 1024,
    precision: str = "fp32",
) -> np.ndarray:
    """Logits of every row of ``x`` in each evaluation view: float32 (N, V, C).

    ``precision`` "bf16" scores under the bf16 autocast the model was trained with (a GroupNorm net
    trained that way is a different function in float32); heads stay float32 either way.
    ``x`` may also be inputs already on the device (tasks/training/fast.py ``ResidentData``).
    """
    model.eval()
    out = []
    dev_type = torch.device(device).type
    for start in range(0, len(x), batch_size):
        if isinstance(x, np.ndarray):
            xb = torch.from_numpy(x[start : start + batch_size]).to(device)
        else:
            xb = x.rows(torch.arange(start, min(start + batch_size, len(x)), device=x.device))
        views = eval_views(xb, n_views, task, seed + start)
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out.append(torch.stack([model(v).float() for v in views], dim=1))
    return torch.cat(out).cpu().numpy().astype(np.float32)  # one device-to-host copy, not one per batch


def test_auroc(logits: np.ndarray, labels: np.ndarray) -> float | None:
    """Macro AUROC over labels with both classes present, from view-0 logits (N, V, C) (sklearn-free)."""
    from tasks.attacks.auc import roc_auc

    z = logits[:, 0, :]
    aucs = [roc_auc(z[:, c], labels[:, c] > 0.5) for c in range(labels.shape[1]) if 0 < labels[:, c].sum() < len(labels)]
    return float(np.mean(aucs)) if aucs else None


def _fast_blocker(recipe: TrainRecipe, task: TaskSpec) -> str | None:
    from tasks.training.fast import fast_path_blocker

    return fast_path_blocker(recipe, task)


def train_shadow_model(job: ShadowJob) -> dict[str, Any]:
    """Train and score one shadow model; write its shard; return its metadata (incl. the shard path)."""
    torch.set_num_threads(job.torch_threads)
    device = job.device if job.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    snap, x_all, y_all, is_test = snapshot_arrays(job.snapshot_dir)
    recipe = TrainRecipe.model_validate(job.recipe)
    members = np.asarray(job.member_records, dtype=np.int64)
    x = x_all
    if recipe.standardize_inputs and snap.task.modality == "tabular":
        mu = x_all[members].mean(axis=0)
        sd = x_all[members].std(axis=0)
        x = ((x_all - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)
    t0 = time.perf_counter()
    units = None
    if recipe.dp_epsilon is not None and recipe.dp_unit == "patient":
        units = snap.records["patient_key"].factorize()[0][members]
    n_views = job.eval_views if snap.task.modality == "image" else 1
    fast = on_for_device(job.fast_path, device) and _fast_blocker(recipe, snap.task) is None
    if fast:  # the worker keeps the inputs on the device and the (compiled) model across the pool's models
        from tasks.training.fast import resident_inputs, train_model_fast

        data = resident_inputs(x_all, device, key=(job.snapshot_dir, snap.version))
        scaling = None if x is x_all else (mu, sd)
        model, stats = train_model_fast(
            data,
            members,
            y_all[members],
            snap.task,
            job.architecture,
            job.arch_params,
            recipe,
            job.seed,
            compile=on_for_device(job.compile, device),
            standardize=scaling,
        )
        seconds = time.perf_counter() - t0
        logits = score_model(model, data if scaling is None else x, snap.task, n_views, job.seed, device, precision=recipe.precision)
    else:
        model, stats = train_model(
            x[members], y_all[members], snap.task, job.architecture, job.arch_params, recipe, job.seed, device, units
        )
        seconds = time.perf_counter() - t0
        logits = score_model(model, x, snap.task, n_views, job.seed, device, precision=recipe.precision)
    auroc = test_auroc(logits[is_test], y_all[is_test]) if is_test.any() else None
    meta_fields = {
        "n_train_records": len(members),
        "train_seconds": seconds,
        "train_loss": stats["train_loss"],
        "test_auroc": auroc,
        "epochs": recipe.epochs,
        "checkpoint": "final",
        "device": device,
        "train_info": {"dp": stats.get("dp")} if stats.get("dp") else ({"fast_path": True, "compiled": stats["compiled"]} if fast else {}),
    }
    return write_shard(job, logits, meta_fields)


def write_shard(job: ShadowJob, logits: np.ndarray, meta_fields: dict[str, Any]) -> dict[str, Any]:
    """Write model ``job.model_idx``'s logits (N, V, C) float32 as an atomic Parquet shard + JSON meta; return the meta.

    ``meta_fields`` holds the training facts (n_train_records, train_seconds, train_loss, test_auroc,
    epochs, checkpoint, device, train_info); identity, provenance, shape and the shard path are added here.
    The JSON is written first and the shard appears (os.replace) only when complete.
    """
    shard_dir = Path(job.shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    n, v, c = logits.shape
    table = pa.table(
        {
            "record_idx": pa.array(np.arange(n, dtype=np.int64)),
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), v * c).cast(pa.list_(pa.float32())),
        }
    )
    final = shard_dir / f"model_{job.model_idx:05d}.parquet"
    tmp = final.with_suffix(f".{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    meta = {
        "model_idx": job.model_idx,
        "seed": job.seed,
        **meta_fields,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "code_version": TRAINING_CODE_VERSION,
        "git_commit": _git_commit(),
        "n_views": v,
        "n_outputs": c,
        "shard": str(final),
    }
    final.with_suffix(".json").write_text(json.dumps(meta))
    os.replace(tmp, final)  # the shard appears only when complete; its JSON is written first
    return meta

"""Training several shadow models of one pool at once (torch.func: stack_module_state + vmap).

``train_shadow_models(jobs)`` is a drop-in for ``[train_shadow_model(j) for j in jobs]``: it writes the
same Parquet shard + JSON meta per model (through ``tasks.training.shadow.write_shard``) and returns the same
metadata, but trains the models of the chunk together, as one vmapped forward/backward over a stacked
model axis. On this CPU, 16 MLPs train 1.3x (width 256, the default) to 3x (width 64) faster per model
than one by one (docs/PERFORMANCE.md).

What is batched, and what falls back to the one-by-one loop (``batching_blocker`` says why):

* batched: non-private recipes, non-image data, architectures whose modules hold no buffers and no
  active dropout (``mlp``; ``tabresnet``, whose GroupNorm has no running statistics) -- the model is
  then a pure function of its parameters and a batch, which is what vmap needs;
* fallback: DP recipes (per-unit clipping goes through Opacus), image data (small conv nets were
  measured 2-3x *slower* batched, design D23), batch-norm running statistics or dropout (per-model
  buffer updates / random masks under vmap), fewer than two jobs, or a model with fewer members than
  one batch (the per-model batch size would differ).

Per-model semantics are those of ``tasks.training.shadow.train_model``, model by model:

* init: ``torch.manual_seed(job.seed)`` then ``build_model``, exactly as train_model does;
* data: standardisation on the model's own members (as train_shadow_model), its own
  ``torch.Generator(seed)`` drawing one ``randperm(n_members)`` per epoch, batches
  ``perm[b*bs:(b+1)*bs]`` and ``n_members // bs`` steps per epoch -- the very batches train_model sees;
* different member counts: an epoch runs ``max_m steps_m`` vmapped steps; a model whose epoch is over
  is *inactive* for the remaining steps (it is fed a dummy batch and its gradient is discarded: no
  parameter, momentum, EMA or step-counter update), so each model takes exactly its own number of
  optimizer steps (padding costs the few percent of steps by which member counts differ);
* optimizer: SGD with momentum (torch's formula: buf = momentum*buf + grad, p -= lr*buf), decoupled
  weight decay p *= 1 - lr*wd before the step, gradient accumulation, the lr schedule
  ``lr_factor(step_m, total_m)`` with each model's own step counter and total, and EMA weights;
* augmentation: none -- only non-image data is batched, and every policy of ``recipe.augment``
  (tasks/training/augment.py) is the identity there, as in train_model; train_models_batched refuses image
  inputs under an augmenting recipe rather than train them unaugmented;
* scoring: every record, float32 (N, V=1, C), through the same forward in eval mode.

The forward is generic ``functional_call`` + ``vmap`` over the stacked parameters, except for the plain
``mlp``, which gets a dedicated stacked forward (one ``torch.baddbmm`` per layer, bias fused; float32
head outside autocast as ``float32_head``), and the optimizer update runs in place on the stacked tensors.

So a batched model equals the one-by-one model up to floating-point rounding (vmapped matmuls sum in
another order); both are the same recipe and share a pool key. Each meta's ``train_info`` records
``batched`` (models in the chunk) and ``batch_seconds`` (the chunk's training time); ``train_seconds``
is that time divided by the number of models.

A model whose loss becomes non-finite does not stop the others (the models are independent along the
vmapped axis): the finite models' shards are written, then FloatingPointError names the diverged ones.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from tasks.config import TrainRecipe
from tasks.datasets.base import TaskSpec
from tasks.ingest.snapshot import Snapshot
from tasks.training.loop import lr_factor
from tasks.training.shadow import ShadowJob, snapshot_arrays, test_auroc, train_shadow_model, write_shard

_SAME_FIELDS = ("pool_key", "snapshot_dir", "architecture", "arch_params", "recipe", "eval_views", "shard_dir", "torch_threads", "device")


@dataclass
class BatchedModels:
    """M models of one architecture as stacked parameters (leading model axis) + per-model input scaling."""

    base: nn.Module  # a structural copy on the meta device (functional_call supplies the weights)
    params: dict[str, torch.Tensor]  # name -> (M, *shape)
    buffers: dict[str, torch.Tensor]  # always empty for batchable architectures
    mu: torch.Tensor | None  # (M, 1, F) standardisation per model, or None
    sd: torch.Tensor | None
    stats: list[dict[str, Any]]  # per model: train_loss, steps, finite
    mlp_layers: list[str] | None = None  # MLP fast path: Linear names in order ("body.0", ..., "head")

    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """(M, B, *shape) -> (M, B, C) logits of every model on its own rows."""
        if self.mlp_layers is not None:
            return _stacked_mlp(self.mlp_layers, params, x)

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xm: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xm,))

        return torch.vmap(one, in_dims=(0, 0, 0))(params, self.buffers, x)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(M, B, *shape) raw rows -> the rows each model sees (standardised on its own members)."""
        return x if self.mu is None else (x - self.mu) / self.sd


def _mlp_layers(model: nn.Module) -> list[str] | None:
    """Linear layer names of a plain ``models.tabular.MLP`` ([Linear, ReLU] x depth -> Linear), else None."""
    from models.tabular import MLP

    if type(model) is not MLP or not all(isinstance(m, nn.Linear | nn.ReLU) for m in model.body):
        return None
    kinds = [type(m) for m in model.body]
    if kinds != [nn.Linear, nn.ReLU] * (len(kinds) // 2):
        return None
    return [f"body.{i}" for i in range(0, len(kinds), 2)] + ["head"]


def _stacked_mlp(layers: list[str], params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The MLP of every model at once: baddbmm fuses each bias into its batched matmul (about 1.6x
    faster than vmap's matmul + add here); the head runs in float32 outside autocast, as float32_head."""
    h = x
    for name in layers[:-1]:
        h = torch.relu(torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2)))
    with torch.autocast(h.device.type, enabled=False):
        w, b = params[f"{layers[-1]}.weight"].float(), params[f"{layers[-1]}.bias"].float()
        return torch.baddbmm(b.unsqueeze(1), h.float(), w.transpose(1, 2))


def _model_blocker(model: nn.Module) -> str | None:
    if any(True for _ in model.buffers()):
        return "the architecture keeps buffers (e.g. batch-norm running statistics)"
    for mod in model.modules():
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0:
            return "the architecture uses dropout"
        if isinstance(mod, nn.modules.batchnorm._NormBase):
            return "the architecture uses batch/instance norm"
    return None


def batching_blocker(jobs: Sequence[ShadowJob]) -> str | None:
    """Why ``jobs`` cannot be trained batched (None when they can). Jobs must be of one pool."""
    if len(jobs) < 2:
        return "fewer than two models"
    recipe = TrainRecipe.model_validate(jobs[0].recipe)
    if recipe.dp_epsilon is not None:
        return "DP-SGD recipes are trained one by one (Opacus)"
    if recipe.optimizer != "sgd":
        return f"optimizer {recipe.optimizer} (the batched update is momentum SGD)"
    task = Snapshot.open(Path(jobs[0].snapshot_dir)).task  # the manifest only: cheap in the flow process
    if task.modality == "image":
        return "image models (conv nets were measured slower batched on CPU)"
    smallest = min(len(j.member_records) for j in jobs)
    if smallest < recipe.batch_size:
        return f"a model has fewer members ({smallest}) than one batch ({recipe.batch_size})"
    from models import build_model

    return _model_blocker(build_model(jobs[0].architecture, task.input_shape, task.n_outputs, task.modality, **jobs[0].arch_params))


def _check_same_pool(jobs: Sequence[ShadowJob]) -> None:
    first = jobs[0]
    for job in jobs[1:]:
        for name in _SAME_FIELDS:
            if getattr(job, name) != getattr(first, name):
                raise ValueError(f"train_shadow_models needs jobs of one pool: {name} differs (model {job.model_idx} vs {first.model_idx})")
    idx = [j.model_idx for j in jobs]
    if len(set(idx)) != len(idx):
        raise ValueError(f"duplicate model_idx in {idx}")


def _per_model_loss(out: torch.Tensor, y: torch.Tensor, task: TaskSpec) -> torch.Tensor:
    """(M, B, C) logits, (M, B, C) float targets -> (M,) mean loss per model (train_model's loss_fn)."""
    m, b, c = out.shape
    if task.kind == "multiclass":
        return nn.functional.cross_entropy(out.reshape(m * b, c), y.argmax(dim=2).reshape(m * b), reduction="none").view(m, b).mean(dim=1)
    return nn.functional.binary_cross_entropy_with_logits(out, y, reduction="none").mean(dim=(1, 2))


def train_models_batched(
    x: np.ndarray,
    y: np.ndarray,
    members: Sequence[np.ndarray],
    task: TaskSpec,
    architecture: str,
    arch_params: dict[str, Any],
    recipe: TrainRecipe,
    seeds: Sequence[int],
    device: str = "cpu",
    standardize: bool = False,
) -> BatchedModels:
    """Train M models at once: model m on rows ``members[m]`` of (x (N, *shape) float32, y (N, C)).

    Per-model semantics as train_model (module docstring). ``standardize`` scales model m's inputs by
    the mean/std of its members (train_shadow_model's rule for tabular data).
    """
    from models import build_model

    if recipe.dp_epsilon is not None:
        raise ValueError("DP recipes are not batched; use train_model")
    if recipe.augment != "none" and np.ndim(x) == 4:
        raise ValueError(f"images are not augmented in the batched path (augment={recipe.augment!r}); use train_model")
    n_models = len(seeds)
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_model(architecture, task.input_shape, task.n_outputs, task.modality, **arch_params).to(device))
    if (why := _model_blocker(models[0])) is not None:
        raise ValueError(f"{architecture!r} cannot be batched: {why}")
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    mlp_layers = _mlp_layers(models[0])
    del models

    with warnings.catch_warnings():  # the snapshot's cached arrays are read-only; nothing writes to them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    yt = torch.from_numpy(y.astype(np.float32)).to(device)
    mu = sd = None
    if standardize:
        mus, sds = [], []
        for mem in members:  # numpy float32, exactly as train_shadow_model
            sub = x[mem]
            m_, s_ = sub.mean(axis=0), sub.std(axis=0)
            mus.append(m_)
            sds.append(np.where(s_ > 0, s_, 1.0).astype(np.float32))
        mu = torch.from_numpy(np.stack(mus)).unsqueeze(1).to(device)
        sd = torch.from_numpy(np.stack(sds)).unsqueeze(1).to(device)
    bm = BatchedModels(base, {k: v.detach() for k, v in params.items()}, buffers, mu, sd, [], mlp_layers)

    n_rows = np.array([len(mem) for mem in members])
    bs = int(min(recipe.batch_size, n_rows.min()))
    if (n_rows < recipe.batch_size).any():
        raise ValueError("every model needs at least one full batch of members")
    spe = np.maximum(n_rows // bs, 1)  # steps per epoch, per model
    accum = recipe.grad_accum_steps
    total = spe * recipe.epochs // accum
    n_steps = spe.max()
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    mem_t = [torch.from_numpy(np.asarray(mem, dtype=np.int64)) for mem in members]
    # lr of every optimizer step of every model (each model its own counter and total)
    lr_table = torch.zeros(n_models, int(total.max()) + 1, dtype=torch.float64)
    for m in range(n_models):
        for s in range(int(total[m])):
            lr_table[m, s] = recipe.learning_rate * lr_factor(s, int(total[m]), recipe)

    shapes = {k: (n_models,) + (1,) * (v.dim() - 1) for k, v in bm.params.items()}
    momentum, wd, decay = recipe.momentum, recipe.weight_decay, recipe.ema_decay
    params = {k: v.requires_grad_(True) for k, v in bm.params.items()}
    bufs = {k: torch.zeros_like(v) for k, v in params.items()} if momentum else {}
    acc = {k: torch.zeros_like(v) for k, v in params.items()} if accum > 1 else {}
    ema = {k: v.detach().clone() for k, v in params.items()} if decay else None
    step = torch.zeros(n_models, dtype=torch.long)
    last_loss = torch.full((n_models,), float("nan"), dtype=torch.float64)
    finite = torch.ones(n_models, dtype=torch.bool)
    dev_type = torch.device(device).type
    bm.base.train()
    for _epoch in range(recipe.epochs):
        # (M, n_steps, bs) record indices: model m's own permutation, padded with its first batch
        batches = torch.empty(n_models, int(n_steps), bs, dtype=torch.long)
        for m in range(n_models):
            perm = torch.randperm(int(n_rows[m]), generator=gens[m])
            own = mem_t[m][perm[: spe[m] * bs]].view(int(spe[m]), bs)
            batches[m, : spe[m]] = own
            batches[m, spe[m] :] = own[0]
        batches = batches.to(device)
        for b in range(int(n_steps)):
            active = torch.from_numpy(b < spe)
            do_step = active if (b + 1) % accum == 0 else torch.zeros_like(active)
            n_stepping = int(do_step.sum())
            idx = batches[:, b]  # (M, bs)
            with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=recipe.precision == "bf16"):
                out = bm.forward(params, bm.prepare(xt[idx]))
            loss_m = _per_model_loss(out.float(), yt[idx], task)
            grads = torch.autograd.grad(loss_m.sum() / accum, list(params.values()))
            with torch.no_grad():
                masks = {k: active.to(device).view(shapes[k]) for k in params}
                if accum > 1:  # gradients accumulate only for models still in their epoch
                    for (k, a), g in zip(acc.items(), grads, strict=True):
                        a.copy_(torch.where(masks[k], a + g, a))
                    grads = tuple(acc.values())
                if n_stepping == 0:
                    continue
                every = n_stepping == n_models
                dmask = {k: do_step.to(device).view(shapes[k]) for k in params}
                lr64 = lr_table.gather(1, step.clamp(max=lr_table.shape[1] - 1)[:, None])[:, 0]
                lr64 = torch.where(do_step, lr64, 0.0)
                neg_lr = (-lr64).to(device=device, dtype=torch.float32)
                shrink = (1 - lr64 * wd).to(device=device, dtype=torch.float32)  # 1 where not stepping
                for (k, p), g in zip(params.items(), grads, strict=True):
                    if every:  # in place, torch.optim.SGD's formulas (fewer passes over the stacked tensors)
                        if wd:
                            p.mul_(shrink.view(shapes[k]))  # decoupled weight decay
                        if momentum:
                            g = bufs[k].mul_(momentum).add_(g)
                        p.addcmul_(g, neg_lr.view(shapes[k]))
                        if accum > 1:
                            acc[k].zero_()
                        if ema is not None:
                            ema[k].mul_(decay).add_(p, alpha=1 - decay)
                        continue
                    # some models' epochs are over: they keep parameters, momentum, accumulator and EMA
                    mk = dmask[k]
                    if wd:
                        p.mul_(shrink.view(shapes[k]))  # factor 1 where not stepping
                    if momentum:
                        bufs[k].copy_(torch.where(mk, bufs[k] * momentum + g, bufs[k]))
                        g = bufs[k]
                    p.copy_(torch.where(mk, p + neg_lr.view(shapes[k]) * g, p))
                    if accum > 1:
                        acc[k].copy_(torch.where(mk, 0.0, acc[k]))
                    if ema is not None:
                        ema[k].copy_(torch.where(mk, ema[k] * decay + p * (1 - decay), ema[k]))
                loss_c = loss_m.detach().to("cpu", torch.float64)
                last_loss = torch.where(do_step, loss_c, last_loss)
                finite &= ~(do_step & ~torch.isfinite(loss_c))
                step += do_step.long()
    bm.params = {k: v.detach() for k, v in params.items()}
    if ema is not None:
        bm.params = ema
    bm.stats = [
        {"train_loss": float(last_loss[m]), "steps": int(step[m]), "finite": bool(finite[m] and math.isfinite(float(last_loss[m])))}
        for m in range(n_models)
    ]
    return bm


@torch.no_grad()
def score_models_batched(bm: BatchedModels, x: np.ndarray, device: str = "cpu", batch_size: int = 1024) -> np.ndarray:
    """Logits of every row of ``x`` for every model: float32 (M, N, 1, C) (one view: non-image data)."""
    bm.base.eval()
    n_models = next(iter(bm.params.values())).shape[0]
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)).to(device)
        xb = bm.prepare(xb.unsqueeze(0).expand(n_models, *xb.shape))
        out.append(bm.forward(bm.params, xb).float().cpu().numpy())
    return np.concatenate(out, axis=1)[:, :, None, :].astype(np.float32)


def train_shadow_models(jobs: list[ShadowJob]) -> list[dict[str, Any]]:
    """Train and score the models of ``jobs`` (one pool), batched where possible; write every shard; return the metas.

    Falls back to ``train_shadow_model`` one by one when ``batching_blocker(jobs)`` gives a reason.
    Raises FloatingPointError after writing the finite models' shards if some models diverged.
    """
    if not jobs:
        return []
    _check_same_pool(jobs)
    if batching_blocker(jobs) is not None:
        return [train_shadow_model(job) for job in jobs]
    first = jobs[0]
    torch.set_num_threads(first.torch_threads)
    device = first.device if first.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    snap, x_all, y_all, is_test = snapshot_arrays(first.snapshot_dir)
    recipe = TrainRecipe.model_validate(first.recipe)
    members = [np.asarray(j.member_records, dtype=np.int64) for j in jobs]
    t0 = time.perf_counter()
    bm = train_models_batched(
        x_all,
        y_all,
        members,
        snap.task,
        first.architecture,
        first.arch_params,
        recipe,
        [j.seed for j in jobs],
        device,
        standardize=recipe.standardize_inputs and snap.task.modality == "tabular",
    )
    seconds = time.perf_counter() - t0
    logits = score_models_batched(bm, x_all, device)
    metas, diverged = [], []
    for m, job in enumerate(jobs):
        if not bm.stats[m]["finite"]:
            diverged.append(f"model {job.model_idx} (loss {bm.stats[m]['train_loss']})")
            continue
        auroc = test_auroc(logits[m][is_test], y_all[is_test]) if is_test.any() else None
        meta_fields = {
            "n_train_records": len(members[m]),
            "train_seconds": seconds / len(jobs),
            "train_loss": bm.stats[m]["train_loss"],
            "test_auroc": auroc,
            "epochs": recipe.epochs,
            "checkpoint": "final",
            "device": device,
            "train_info": {"batched": len(jobs), "batch_seconds": seconds},
        }
        metas.append(write_shard(job, logits[m], meta_fields))
    if diverged:
        raise FloatingPointError(
            f"training diverged for {', '.join(diverged)}; the other {len(metas)} models' shards are written; lower the learning rate"
        )
    return metas

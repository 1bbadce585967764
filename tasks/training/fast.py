"""The fast training path (``execution.fast_path``): the same recipe as ``tasks.training.shadow.train_model``, built for GPUs.

What differs from ``train_model`` (and what does not):

* data: the whole snapshot's inputs live on the model's device, uploaded once per worker process
  (``resident_inputs``, cached by snapshot and device): images that are exact 8-bit levels
  (k / 127.5 - 1, tasks/datasets/imaging.py) as uint8 (a quarter of float32), anything else as float32;
  a batch is one ``index_select`` on the device;
* batches: the same ones -- ``torch.manual_seed(seed)`` initialisation, ``torch.Generator(seed)`` on the
  host drawing one ``randperm`` per epoch and one augmentation seed per batch, exactly as train_model;
* augmentation: the same policy, drawn on the device (tasks/training/device_augment.py): each batch reseeds the
  device generator with the seed train_model would have drawn, so the parameters are a draw from the same
  distribution as the host path's, not the same draw;
* no host synchronisation per step: the loss's finiteness is accumulated on the device and read every
  ``FINITE_CHECK_EVERY`` optimizer steps and at the end (a divergence is reported at the first check after it);
* optimizer: SGD with momentum (fused on CUDA, foreach elsewhere), decoupled weight decay and EMA as
  foreach updates -- the same formulas as train_model, fewer kernel launches;
* ``torch.compile`` (``compile=True``): the model of an (architecture, shape, device) is compiled once per
  worker process and reused for every model of the pool: each model re-initialises the same module's
  parameters and buffers in place from its seed (``load_state_dict`` of a freshly built model), so the
  compiled graph stays valid. Inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, by default under
  the system's temp directory) makes later processes and runs skip most of the compile.

Recipes the fast path does not cover (``fast_path_blocker``: DP-SGD, an optimizer other than SGD, an
augmentation policy without device kernels) train through ``train_model``'s loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.config import TrainRecipe
from tasks.datasets.base import TaskSpec

FINITE_CHECK_EVERY = 50  # optimizer steps between host reads of the on-device finiteness flag
# cuDNN autotuning for the fixed shapes of a pool (set while a fast-path model trains, restored after). CUDA
# convolution backward is not bitwise reproducible either way; the bench measures both settings.
CUDNN_BENCHMARK = True
_DATA_CACHE: OrderedDict[tuple[Any, ...], ResidentData] = OrderedDict()
_MODEL_CACHE: OrderedDict[tuple[Any, ...], ReusableModel] = OrderedDict()
_CACHE_SIZE = 2


def fast_path_blocker(recipe: TrainRecipe, task: TaskSpec) -> str | None:
    """Why ``recipe`` on ``task`` trains through train_model's loop instead (None: the fast path covers it)."""
    from tasks.training.device_augment import DeviceAugmenter

    if recipe.dp_epsilon is not None:
        return "DP-SGD recipes train through tasks/training/dp.py"
    optimizer = recipe.optimizer  # recipes that name another optimizer keep train_model's loop
    if optimizer != "sgd":
        return f"optimizer {optimizer!r} (the fast path implements SGD)"
    if task.modality == "image" and recipe.augment != "none" and not DeviceAugmenter.supports(recipe.augment, task.input_shape):
        return f"augmentation {recipe.augment!r} has no device kernels"
    return None


def _levels() -> torch.Tensor:
    """float32 value of each 8-bit level k: k / 127.5 - 1 computed in float64 as the image decoders do."""
    return (torch.arange(256, dtype=torch.float64, device="cpu") / 127.5 - 1.0).float()


@dataclass
class ResidentData:
    """Inputs (N, *shape) on a device: uint8 levels (decoded through a 256-entry table on read) or float32."""

    x: torch.Tensor
    uint8: bool

    def __post_init__(self) -> None:
        self.table = _levels().to(self.x.device) if self.uint8 else None

    @property
    def device(self) -> torch.device:
        return self.x.device

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """float32 (B, *shape) rows ``idx`` (B,) int64 on the same device, exactly the float32 inputs uploaded."""
        xb = self.x.index_select(0, idx)
        return self.table[xb.long()] if self.table is not None else xb

    def __len__(self) -> int:
        return len(self.x)


def resident_inputs(x: np.ndarray, device: torch.device | str, key: tuple[Any, ...] | None = None) -> ResidentData:
    """``x`` (N, *shape) float32 on ``device``; with ``key`` (e.g. snapshot path and version) cached per process."""
    device = torch.device(device)
    full_key = None if key is None else (*key, str(device))
    if full_key is not None and full_key in _DATA_CACHE:
        _DATA_CACHE.move_to_end(full_key)
        return _DATA_CACHE[full_key]
    levels = np.rint((x.astype(np.float64) + 1.0) * 127.5) if x.ndim == 4 and x.size else None
    exact = (
        levels is not None and levels.min() >= 0 and levels.max() <= 255 and np.array_equal(_levels().numpy()[levels.astype(np.int64)], x)
    )
    host = torch.from_numpy(levels.astype(np.uint8)) if exact else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    data = ResidentData(host.to(device), bool(exact))
    if full_key is not None:
        _DATA_CACHE[full_key] = data
        while len(_DATA_CACHE) > _CACHE_SIZE:
            _DATA_CACHE.popitem(last=False)
    return data


class ReusableModel:
    """One module of an architecture on a device (optionally compiled once), re-initialised per model seed."""

    def __init__(
        self, architecture: str, arch_params: dict[str, Any], task: TaskSpec, device: torch.device, channels_last: bool, compile: bool
    ):
        self.spec = (architecture, dict(arch_params), task.input_shape, task.n_outputs, task.modality)
        self.device, self.channels_last = device, channels_last
        self.module = self._fresh(0)
        self.forward = torch.compile(self.module) if compile else self.module
        self.compiled = compile

    def _fresh(self, seed: int) -> nn.Module:
        from models import build_model

        architecture, params, shape, n_out, modality = self.spec
        torch.manual_seed(seed)  # as train_model: the same initialisation for the same seed, drawn on the host
        with torch.device("cpu"):
            model = build_model(architecture, shape, n_out, modality, **params)
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def reset(self, seed: int) -> nn.Module:
        """The module with model ``seed``'s initial parameters and buffers, copied in place (the compiled graph stays valid)."""
        fresh = self._fresh(seed)
        with torch.no_grad():
            self.module.load_state_dict(fresh.state_dict())
        self.module.train()
        return self.module


def reusable_model(
    architecture: str, arch_params: dict[str, Any], task: TaskSpec, device: torch.device, channels_last: bool, compile: bool
) -> ReusableModel:
    """The process's ReusableModel of this architecture, shape, device, layout and compile setting."""
    import json

    key = (
        architecture,
        json.dumps(arch_params, sort_keys=True, default=str),
        task.input_shape,
        task.n_outputs,
        task.modality,
        str(device),
        channels_last,
        compile,
    )
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = ReusableModel(architecture, arch_params, task, device, channels_last, compile)
        while len(_MODEL_CACHE) > _CACHE_SIZE:
            _MODEL_CACHE.popitem(last=False)
    _MODEL_CACHE.move_to_end(key)
    return _MODEL_CACHE[key]


def _optimizer(params: list[torch.Tensor], recipe: TrainRecipe, device: torch.device) -> torch.optim.Optimizer:
    if device.type == "cuda":
        return torch.optim.SGD(params, lr=recipe.learning_rate, momentum=recipe.momentum, fused=True)
    return torch.optim.SGD(params, lr=recipe.learning_rate, momentum=recipe.momentum, foreach=True)


@contextmanager
def _cudnn_autotuning(device: torch.device) -> Iterator[None]:
    """cuDNN autotuning (CUDNN_BENCHMARK) while a model trains on CUDA, the caller's setting restored after."""
    before = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def train_model_fast(
    data: ResidentData,
    members: np.ndarray,
    y: np.ndarray,
    task: TaskSpec,
    architecture: str,
    arch_params: dict[str, Any],
    recipe: TrainRecipe,
    seed: int,
    *,
    compile: bool = False,
    standardize: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model on rows ``members`` (n,) of ``data`` with labels ``y`` (n, C); the fast path of train_model.

    ``standardize``: (mean, std) float32 (*shape) applied to every batch (tabular inputs, train_shadow_model's rule).
    Returns the trained module (the process's reusable one: use it before training the next model) and stats.
    """
    from tasks.training.augment import is_image_batch, seed_from
    from tasks.training.device_augment import DeviceAugmenter
    from tasks.training.loop import Ema, accumulate_gradients, optimizer_step, task_loss

    if (why := fast_path_blocker(recipe, task)) is not None:
        raise ValueError(f"the fast path does not cover this recipe: {why}")
    device = data.device
    image = task.modality == "image"
    runner = reusable_model(architecture, arch_params, task, device, recipe.channels_last and image, compile)
    model = runner.reset(seed)
    gen = torch.Generator().manual_seed(seed)  # the host generator of train_model: same permutations, same augmentation seeds
    aug = DeviceAugmenter(recipe.augment, task.input_shape, device, seed) if image and recipe.augment != "none" else None
    rows = torch.from_numpy(np.asarray(members, dtype=np.int64)).to(device)
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32)).to(device)
    mu = sd = None
    if standardize is not None:
        mu = torch.from_numpy(np.asarray(standardize[0], dtype=np.float32)).to(device)
        sd = torch.from_numpy(np.where(standardize[1] > 0, standardize[1], 1.0).astype(np.float32)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(params, recipe, device)
    ema = Ema(model, recipe.ema_decay) if recipe.ema_decay else None
    loss_fn = task_loss(task)
    n = len(rows)
    bs = min(recipe.batch_size, n)
    steps_per_epoch = max(n // bs, 1)
    total = steps_per_epoch * recipe.epochs // recipe.grad_accum_steps
    finite = torch.ones((), dtype=torch.bool, device=device)
    last = torch.full((), float("nan"), device=device)
    step = 0

    def check() -> None:
        if not bool(finite):  # the one host read, every FINITE_CHECK_EVERY steps
            raise FloatingPointError(
                f"training diverged (non-finite loss) at or before step {step} of model seed {seed}; lower the learning rate"
            )

    with _cudnn_autotuning(device):
        for _epoch in range(recipe.epochs):
            perm = torch.randperm(n, generator=gen, device="cpu").to(device)
            for b in range(steps_per_epoch):
                idx = perm[b * bs : (b + 1) * bs]
                xb = data.rows(rows.index_select(0, idx))
                if mu is not None:
                    xb = (xb - mu) / sd
                if aug is not None and is_image_batch(xb):
                    aug.gen.manual_seed(seed_from(gen))  # the seed train_model draws for this batch from the same generator
                    xb = aug(xb)
                loss = accumulate_gradients(runner.forward, xb, yt.index_select(0, idx), loss_fn, task, recipe)
                if (b + 1) % recipe.grad_accum_steps:
                    continue
                optimizer_step(opt, params, recipe, step, total)
                step += 1
                with torch.no_grad():
                    last = loss.detach() * recipe.grad_accum_steps
                    finite &= torch.isfinite(last)
                if ema is not None:
                    ema.update()
                if step % FINITE_CHECK_EVERY == 0:
                    check()
        check()
        if ema is not None:
            ema.copy_to_model()
        return model, {"train_loss": float(last), "steps": step, "fast_path": True, "compiled": runner.compiled}

"""One training step's parts, shared by every training loop (train_model, the fast path, the batched path).

The loss and targets of a task, the learning-rate schedule (method §2.2: warm-up then cosine), the recipe's
optimizer, one optimizer step (scheduled learning rate, decoupled weight decay, step, gradients cleared) and
the EMA of the weights, so that each loop follows one recipe, written once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from tasks.config import TrainRecipe
from tasks.datasets.base import TaskSpec


def accumulate_gradients(
    forward: Callable[[torch.Tensor], torch.Tensor],
    xb: torch.Tensor,
    yb: torch.Tensor,
    loss_fn: nn.Module,
    task: TaskSpec,
    recipe: TrainRecipe,
) -> torch.Tensor:
    """One micro-batch: ``xb`` (B, *shape) through ``forward`` (channels_last and bf16 autocast as the recipe says;
    the head's output in float32), the task loss over ``grad_accum_steps``, backward. Returns that scaled loss."""
    if recipe.channels_last and xb.dim() == 4:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=xb.device.type, dtype=torch.bfloat16, enabled=recipe.precision == "bf16"):
        out = forward(xb)
    loss = loss_fn(out.float(), training_targets(yb, task)) / recipe.grad_accum_steps
    loss.backward()
    return loss


def optimizer_step(opt: torch.optim.Optimizer, params: list[torch.Tensor], recipe: TrainRecipe, step: int, total: int) -> None:
    """One optimizer step of ``recipe`` at ``step`` of ``total``: the scheduled learning rate, decoupled weight
    decay (method §2.2; plain Adam couples it instead, make_optimizer) as one foreach update, the step, and
    the gradients cleared. Shared by train_model and the fast path, so the two follow one recipe."""
    lr = recipe.learning_rate * lr_factor(step, total, recipe)
    for group in opt.param_groups:
        group["lr"] = lr
    if recipe.weight_decay and recipe.optimizer != "adam":
        with torch.no_grad():
            torch._foreach_mul_(params, 1 - lr * recipe.weight_decay)
    opt.step()
    opt.zero_grad(set_to_none=True)


class Ema:
    """Exponential moving average of a model's state (parameters and buffers), updated after each optimizer step.

    Floating-point entries follow ``e <- decay * e + (1 - decay) * v`` (foreach updates); integer buffers
    (BatchNorm's step counter) are copied. ``copy_to_model`` loads the average into the model at the end.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.state = list(model.state_dict().values())  # the model's own tensors: updated in place by training
        self.avg = [v.detach().clone() for v in self.state]
        self.decay = decay
        self._avg_f = [e for e, v in zip(self.avg, self.state, strict=True) if v.dtype.is_floating_point]
        self._val_f = [v for v in self.state if v.dtype.is_floating_point]
        self._ints = [(e, v) for e, v in zip(self.avg, self.state, strict=True) if not v.dtype.is_floating_point]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_mul_(self._avg_f, self.decay)
        torch._foreach_add_(self._avg_f, self._val_f, alpha=1 - self.decay)
        for e, v in self._ints:
            e.copy_(v)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for v, e in zip(self.state, self.avg, strict=True):
            v.copy_(e)


def lr_factor(step: int, total: int, recipe: TrainRecipe) -> float:
    """Learning-rate multiplier at ``step`` (method §2.2: cos(f·7π/16) with linear warm-up)."""
    f = min(max(step / max(total, 1), 0.0), 1.0)
    warm = min(f / recipe.warmup_fraction, 1.0) if recipe.warmup_fraction > 0 else 1.0
    if recipe.schedule == "cosine_7pi16":
        return math.cos(f * 7 * math.pi / 16) * warm
    if recipe.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * f)) * warm
    return warm


def task_loss(task: TaskSpec) -> nn.Module:
    return nn.CrossEntropyLoss() if task.kind == "multiclass" else nn.BCEWithLogitsLoss()


def training_targets(y: torch.Tensor, task: TaskSpec) -> torch.Tensor:
    return y.argmax(dim=1) if task.kind == "multiclass" else y


def make_optimizer(params: list[nn.Parameter], recipe: TrainRecipe) -> torch.optim.Optimizer:
    """The recipe's optimizer. Decoupled weight decay ("sgd", "adamw") is applied by the training loop,
    identically for both (p *= 1 - lr * wd, as torch's AdamW does); "adam" gets it as L2 in the gradient."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.learning_rate, momentum=recipe.momentum)
    wd = recipe.weight_decay if recipe.optimizer == "adam" else 0.0
    return torch.optim.Adam(params, lr=recipe.learning_rate, betas=(recipe.momentum, 0.999), weight_decay=wd)

"""Recipe presets: each dataset's default pool settings, by name (``--recipe paper|quick``).

A preset is a PoolConfig fragment ``{"architecture": {"name", "params"}, "recipe": {TrainRecipe
fields}, "eval_views": n}`` stored on the adapter class as ``DatasetAdapter.default_pools[name]``:

* ``paper``: the paper's architecture and optimisation for that dataset (method §2.2, in
  docs/DATASETS.md): WRN-28-2 for the image sets, the 1-D ResNet at F=128 for PTB-XL, the tabular ResNet
  300 x 6 for MIMIC-IV-ED, each with its epochs, learning rate, weight decay, batch, momentum, EMA,
  warm-up, gradient accumulation and augmentation. Sized for GPUs.
* ``quick``: the same modality's architecture family shrunk to finish in minutes on 2 CPU cores; also
  the pool of ``medaudit demo`` (so demo pools and ``--recipe quick`` pools are one definition).

``compose_pool`` layers a preset under what a ``--config`` file and the command line set.
"""

from __future__ import annotations

import copy
from typing import Any

from tasks.errors import ConfigError

# ---- quick: CPU-sized (these are the demo's pools; changing them changes the demo's pool keys)
_SMALL_CNN = {"name": "small_cnn", "params": {"width_multiplier": 0.25}}
# bf16 autocast + channels_last roughly halve a CPU training step of the small CNN (design D23).
_QUICK_IMAGE_RECIPE = {"epochs": 30, "batch_size": 32, "learning_rate": 0.05, "precision": "bf16", "channels_last": True}

# Images: the paper's small CNN at a quarter of its width, two evaluation views (identity + flip),
# 30 epochs: enough to memorise the atypical presentations the synthetic writers plant (3%).
QUICK_IMAGE: dict[str, Any] = {"architecture": _SMALL_CNN, "recipe": _QUICK_IMAGE_RECIPE, "eval_views": 2}
# The paper's 1-D ResNet at F=16 (the paper: 128) on 12 x 1000 ECGs. float32: a GroupNorm net trained
# under bf16 autocast scores differently in float32, which is how models are scored.
QUICK_SIGNAL: dict[str, Any] = {
    "architecture": {"name": "resnet1d", "params": {"filters": 16}},
    "recipe": {"epochs": 20, "batch_size": 16, "learning_rate": 0.05},
}
# An MLP that memorises atypical stays while generalising on typical ones (tuned on the synthetic
# ED cohort: aggregate LiRA AUC about 0.63, highest record AUC about 1.0).
QUICK_TABULAR: dict[str, Any] = {
    "architecture": {"name": "mlp", "params": {"width": 128, "depth": 2}},
    "recipe": {"epochs": 40, "batch_size": 128, "learning_rate": 0.01, "weight_decay": 5e-4, "momentum": 0.9, "warmup_fraction": 0.05},
}


def paper_pool(
    architecture: str,
    *,
    epochs: int,
    learning_rate: float,
    weight_decay: float,
    batch_size: int,
    momentum: float,
    ema_decay: float,
    warmup_fraction: float,
    grad_accum_steps: int,
    augment: str = "none",
    params: dict[str, Any] | None = None,
    eval_views: int | None = None,
) -> dict[str, Any]:
    """A ``paper`` preset: one row of the paper's optimisation table (SGD, cosine 7pi/16 schedule)."""
    pool: dict[str, Any] = {
        "architecture": {"name": architecture, "params": dict(params or {})},
        "recipe": {
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "warmup_fraction": warmup_fraction,
            "schedule": "cosine_7pi16",
            "ema_decay": ema_decay,
            "grad_accum_steps": grad_accum_steps,
            "augment": augment,
        },
    }
    if eval_views is not None:
        pool["eval_views"] = eval_views
    return pool


def preset_names(presets: dict[str, dict[str, Any]]) -> str:
    return ", ".join(sorted(presets)) or "none"


def compose_pool(
    presets: dict[str, dict[str, Any]],
    dataset: str,
    preset: str | None,
    layers: list[dict[str, Any] | None],
    flags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The pool section of a config: the preset ``preset`` of ``dataset`` (None: none) under ``layers``
    (later wins: the --config file's pool, then what a command sets), under ``flags`` (--arch, --epochs).
    A layer replaces the preset's keys whole (a --config recipe is the recipe, as written, so an existing
    model's training is described exactly); ``flags`` change single recipe fields (``--epochs 5`` keeps
    the preset's other recipe fields).

    ``recipe_preset`` records the preset's name, with " (modified)" when anything changed its
    architecture, recipe or views."""
    if preset is not None and preset not in presets:
        raise ConfigError(f"dataset {dataset!r} has no recipe preset {preset!r}; its presets: {preset_names(presets)}")
    base = copy.deepcopy(presets[preset]) if preset is not None else {}
    pool = copy.deepcopy(base)
    for layer in layers:
        pool.update(copy.deepcopy(layer or {}))
    for key, value in (flags or {}).items():
        pool[key] = {**pool.get(key, {}), **value} if key == "recipe" else copy.deepcopy(value)
    if preset is not None and "recipe_preset" not in pool:
        changed = any(pool.get(k) != base.get(k) for k in ("architecture", "recipe", "eval_views"))
        pool["recipe_preset"] = preset + (" (modified)" if changed else "")
    return pool

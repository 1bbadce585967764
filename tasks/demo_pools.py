"""Pool settings for `medaudit demo --dataset D`: sized to finish in minutes on a 2-core CPU.

The paper's recipes (paper-method.md §2.2) need GPUs; these keep each modality's architecture family
but shrink width and epochs so the demo shows the phenomenon on synthetic data of that modality.
"""

from __future__ import annotations

from typing import Any

DEMO_POOLS: dict[str, dict[str, Any]] = {
    # An MLP that memorises atypical stays while generalising on typical ones (tuned on the synthetic
    # ED cohort: aggregate LiRA AUC about 0.63, highest record AUC about 1.0).
    "mimic-iv-ed": {
        "architecture": {"name": "mlp", "params": {"width": 128, "depth": 2}},
        "recipe": {"epochs": 40, "batch_size": 128, "learning_rate": 0.01, "weight_decay": 5e-4, "momentum": 0.9, "warmup_fraction": 0.05},
    },
}


def demo_pool(dataset: str) -> dict[str, Any]:
    """The demo pool settings of ``dataset`` (empty: the config defaults)."""
    return DEMO_POOLS.get(dataset, {})

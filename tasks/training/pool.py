"""Pool planning: which patients a pool trains on, and the pool key that identifies its models."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.config import AuditConfig, stable_hash
from tasks.errors import ConfigError
from tasks.ingest.snapshot import Snapshot
from tasks.training.shadow import TRAINING_CODE_VERSION


def training_patients(records: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(train record_idx (N,), patient order (first appearance, method §3.1), codes (N,) into it)."""
    train = records[records["split"] == "train"]
    codes, order = pd.factorize(train["patient_key"], sort=False)
    return train["record_idx"].to_numpy(), list(order), codes.astype(np.int64)


def pool_key_for(cfg: AuditConfig, snapshot: Snapshot) -> tuple[str, int]:
    """The pool key (design D3, D7): dataset version, architecture, recipe, mask seed, views, code version."""
    if cfg.pool.architecture.name is None:
        raise ConfigError(f"no architecture for {cfg.dataset}: name one (--arch or pool.architecture); see `medaudit architectures`")
    n_views = cfg.pool.eval_views if snapshot.task.modality == "image" else 1
    key = stable_hash(
        {
            "dataset_version": snapshot.version,
            "architecture": cfg.pool.architecture.model_dump(mode="json"),
            "recipe": cfg.pool.recipe.key_dict(),
            "mask_seed": cfg.pool.seed,
            "eval_views": n_views,
            "score_transform": snapshot.task.score_transform,
            "training_code": TRAINING_CODE_VERSION,
        }
    )
    return key, n_views

"""One row per architecture of `medaudit scaling`: its capacity next to the risk its pool's audit measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models import build_model
from tasks.datasets.base import TaskSpec
from tasks.storage.queries import pool_patient_risks, pool_test_auroc


def parameter_count(arch: dict[str, Any], task: TaskSpec) -> int:
    """Trainable and frozen parameters of ``arch`` built for ``task``."""
    model = build_model(arch["name"], task.input_shape, task.n_outputs, task.modality, **arch["params"])
    return int(sum(p.numel() for p in model.parameters()))


def arch_label(arch: dict[str, Any]) -> str:
    """``mlp width=16 depth=1``: the architecture's name and options, as the table and plot show it."""
    return arch["name"] + "".join(f" {k}={v}" for k, v in arch["params"].items())


def scaling_row(db: Path, res: dict[str, Any], arch: dict[str, Any], task: TaskSpec) -> tuple[dict[str, Any], np.ndarray]:
    """(the table row of one architecture's audited pool, its patients' risks (P,)); ``res``: the audit flow's result."""
    pool = res["pool_key"]
    risk = pool_patient_risks(db, pool)["risk"].to_numpy(dtype=float)
    perf = pool_test_auroc(db, pool)
    h = res["headline"]
    row = {
        "label": arch_label(arch),
        "architecture": arch["name"],
        "params": json.dumps(arch["params"]),
        "n_parameters": parameter_count(arch, task),
        "pool_key": pool,
        "n_models": h["n_models"],
        "patients_above_threshold": h["n_patients_above_threshold"],
        "share_above_threshold": h["share_patients_above_threshold"],
        "lira_auc_mean": h["lira_auc_mean"],
        "test_auroc_mean": perf["m"][0],
        "test_auroc_std": perf["s"][0],
    }
    return row, risk

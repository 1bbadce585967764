"""Recipes with Adam/AdamW keep existing pool keys; an unchanged raw folder is not ingested again."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.config import TrainRecipe, stable_hash
from tasks.datasets import get_dataset
from tasks.ingest.cache import raw_fingerprint, snapshot_unless_unchanged
from tasks.ingest.snapshot import build_snapshot
from tasks.synthetic.mimic_iv_ed import write_ed_cohort
from tasks.training.loop import make_optimizer
from tasks.training.shadow import train_model


def test_default_optimizer_keeps_existing_pool_keys() -> None:
    # hashes of these recipes' key dicts before the optimizer field existed (medaudit main, 2026-11-27)
    assert stable_hash(TrainRecipe().key_dict()) == "b77d8d8464cbc5f5"
    assert stable_hash(TrainRecipe(epochs=30, learning_rate=0.02, weight_decay=0.0, batch_size=64).key_dict()) == "d1a37330264d60b3"
    assert stable_hash(TrainRecipe(optimizer="sgd").key_dict()) == "b77d8d8464cbc5f5"
    keys = {stable_hash(TrainRecipe(optimizer=o).key_dict()) for o in ("sgd", "adam", "adamw")}
    assert len(keys) == 3
    with pytest.raises(ValueError, match="optimizer 'adamw' is not available"):
        TrainRecipe(optimizer="adamw", dp_epsilon=1.0)


def test_adam_and_adamw_steps_match_torch() -> None:
    """adamw: the loop's decoupled decay then Adam equals torch.optim.AdamW; adam: L2 in the gradient."""
    torch.manual_seed(0)
    w0 = torch.randn(5)
    grad = torch.randn(5)
    lr, wd = 0.1, 0.3
    for name, ref_cls in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)):
        recipe = TrainRecipe(optimizer=name, learning_rate=lr, weight_decay=wd)
        p = torch.nn.Parameter(w0.clone())
        opt = make_optimizer([p], recipe)
        for _ in range(3):
            if name == "adamw":
                with torch.no_grad():
                    p.mul_(1 - lr * wd)  # what train_model does for decoupled decay
            p.grad = grad.clone()
            opt.step()
        q = torch.nn.Parameter(w0.clone())
        ref = ref_cls([q], lr=lr, weight_decay=wd)
        for _ in range(3):
            q.grad = grad.clone()
            ref.step()
        torch.testing.assert_close(p.detach(), q.detach())
    x = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    task = get_dataset("mimic-iv-ed").task
    _, stats = train_model(x, y, task, "mlp", {"width": 16, "depth": 1}, TrainRecipe(optimizer="adamw", epochs=3, batch_size=16), seed=0)
    assert np.isfinite(stats["train_loss"]) and stats["steps"] == 12


def test_unchanged_raw_folder_reuses_its_snapshot(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_ed_cohort(raw, 60, seed=1)
    adapter = get_dataset("mimic-iv-ed")
    builds: list[int] = []

    def build() -> object:
        builds.append(1)
        return build_snapshot(adapter, raw, tmp_path / "results", b"secret")

    first, reused = snapshot_unless_unchanged(adapter, raw, tmp_path / "results", b"secret", build)
    assert not reused
    again, reused = snapshot_unless_unchanged(adapter, raw, tmp_path / "results", b"secret", build)
    assert reused and again.version == first.version and len(builds) == 1
    # what changes the fingerprint (checked without ingesting again): the secret (other patient keys),
    # a touched file (checked again), changed content, another adapter option
    fp = raw_fingerprint(adapter, raw, b"secret")
    assert raw_fingerprint(adapter, raw, b"other") != fp
    assert raw_fingerprint(get_dataset("mimic-iv-ed", {"split_seed": 3}), raw, b"secret") != fp
    csv = raw / "master_dataset.csv"
    st = csv.stat()
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = raw_fingerprint(adapter, raw, b"secret")
    assert touched != fp
    data = csv.read_bytes()
    csv.write_bytes(data[:-2] + (b"1\n" if data[-2:] != b"1\n" else b"0\n"))  # same size, new content
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # and the same mtime: the edge hash still sees it
    assert raw_fingerprint(adapter, raw, b"secret") != touched

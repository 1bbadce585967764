"""The fast training path (tasks/training/fast.py) trains the same models as train_model, and the compute estimate.

"Same models": identical initial weights and batches for a seed (so identical per-model seeds and masks in
a pool), the same recipe, and the same test AUROC within noise on a learnable synthetic image task. The
augmentation draws differ (device generator), so the weights are not bitwise equal -- as between two
seeds of one recipe. Without augmentation nothing random differs: the two paths then agree to float rounding.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.config import TrainRecipe
from tasks.datasets.base import TaskSpec
from tasks.training.cost import describe_pool_compute, pool_compute, training_flops_per_record
from tasks.training.fast import ReusableModel, resident_inputs
from tasks.training.shadow import score_model, train_model
from tasks.training.shadow import test_auroc as macro_auroc  # (not collected as a test)

TASK = TaskSpec(
    kind="multilabel",
    label_names=("a", "b"),
    input_shape=(1, 8, 8),
    modality="image",
    score_transform="multilabel_logit",
    default_architecture="small_cnn",
)
ARCH = {"width_multiplier": 0.125}


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8 x 8 images at 8-bit levels; each label brightens a 3 x 3 patch by about the pixel noise (AUROC below 1)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, 2)).astype(np.float32)
    x = rng.normal(0.0, 0.5, (n, 1, 8, 8))
    x[:, 0, 1:4, 1:4] += 0.5 * y[:, :1, None]
    x[:, 0, 4:7, 4:7] += 0.5 * y[:, 1:, None]
    return (np.rint((np.clip(x, -1, 1) + 1) * 127.5) / 127.5 - 1).astype(np.float32), y


def test_same_models_same_auroc_within_noise() -> None:
    x, y = _images(384, 0)
    x_test, y_test = _images(300, 1)
    recipe = TrainRecipe(
        epochs=3, batch_size=64, learning_rate=0.05, augment="medium", ema_decay=0.9
    )  # fp32: bf16 is slow for tiny CPU convs
    auc: dict[bool, list[float]] = {False: [], True: []}
    for seed in range(3):
        for fast in (False, True):
            model, stats = train_model(x, y, TASK, "small_cnn", ARCH, recipe, seed, fast_path=fast)
            assert stats["steps"] == 18
            auc[fast].append(macro_auroc(score_model(model, x_test, TASK, 1, 0), y_test))
    today, fast = np.array(auc[False]), np.array(auc[True])
    assert 0.6 < today.mean() < 0.97  # learnable, not trivial
    # paired by seed (same init and batches): the difference is the augmentation draws' noise
    diff = fast - today
    assert abs(diff.mean()) < max(0.03, 3 * diff.std(ddof=1) / np.sqrt(len(diff)))


def test_without_augmentation_the_paths_agree_to_rounding() -> None:
    x, y = _images(192, 2)
    recipe = TrainRecipe(epochs=2, batch_size=32, learning_rate=0.05, ema_decay=0.9, weight_decay=5e-4)
    today, _ = train_model(x, y, TASK, "small_cnn", ARCH, recipe, 5)
    fast, _ = train_model(x, y, TASK, "small_cnn", ARCH, recipe, 5, fast_path=True)
    for (name, a), b in zip(today.state_dict().items(), fast.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)


def test_reused_module_reinitialises_exactly_like_a_fresh_build() -> None:
    from models import build_model

    runner = ReusableModel("small_cnn", ARCH, TASK, torch.device("cpu"), channels_last=False, compile=False)
    first = runner.module
    for seed in (3, 4):
        model = runner.reset(seed)
        assert model is first  # one module (and compiled graph) for the whole pool
        torch.manual_seed(seed)
        fresh = build_model("small_cnn", TASK.input_shape, TASK.n_outputs, "image", **ARCH)
        for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_divergence_is_reported_from_the_on_device_flag() -> None:
    x, y = _images(128, 3)
    x[5] = np.nan  # a non-finite input poisons the loss of the batch that holds it
    recipe = TrainRecipe(epochs=1, batch_size=32)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train_model(x, y, TASK, "small_cnn", ARCH, recipe, 0, fast_path=True)


def test_inputs_are_uploaded_once_per_worker_as_exact_uint8() -> None:
    x, _ = _images(64, 4)
    data = resident_inputs(x, "cpu", key=("snap-a", "v1"))
    assert data.uint8 and data.x.dtype == torch.uint8
    assert resident_inputs(x, "cpu", key=("snap-a", "v1")) is data  # the worker-local cache
    np.testing.assert_array_equal(data.rows(torch.arange(64)).numpy(), x)
    off_grid = x + 1e-3
    assert not resident_inputs(off_grid, "cpu").uint8  # not 8-bit levels: kept as float32


def test_shadow_model_job_on_the_fast_path(tmp_path: Path) -> None:
    """A pool's job with execution.fast_path: same members and seed, recorded as fast, AUROC of the same recipe."""
    from tasks.datasets import get_dataset
    from tasks.ingest.snapshot import build_snapshot
    from tasks.synthetic.mimic_iv_ed import write_ed_cohort
    from tasks.training.masks import model_seed, pool_masks
    from tasks.training.pool import training_patients
    from tasks.training.shadow import ShadowJob, train_shadow_model

    write_ed_cohort(tmp_path / "raw", 250, seed=3)
    snap = build_snapshot(get_dataset("mimic-iv-ed"), tmp_path / "raw", tmp_path / "results", b"fast-path-test-secret-0123456789")
    train_idx, order, codes = training_patients(snap.records)
    members = train_idx[pool_masks(len(order), 0, 4)[0][codes]]
    recipe = TrainRecipe(epochs=5, batch_size=64, ema_decay=0.9).model_dump(mode="json")
    job = ShadowJob("pool", 0, model_seed(0, 0), str(snap.path), "mlp", {"width": 32}, recipe, 1, members, str(tmp_path / "a"))
    today = train_shadow_model(job)
    fast = train_shadow_model(dataclasses.replace(job, shard_dir=str(tmp_path / "b"), fast_path=True))
    assert fast["train_info"] == {"fast_path": True, "compiled": False} and today["train_info"] == {}
    assert (fast["seed"], fast["n_train_records"]) == (today["seed"], today["n_train_records"])
    assert fast["test_auroc"] == pytest.approx(today["test_auroc"], abs=1e-3)  # tabular: no augmentation, rounding only
    assert json.loads(Path(fast["shard"]).with_suffix(".json").read_text())["train_info"]["fast_path"] is True


def test_compute_estimate_matches_closed_forms() -> None:
    tab = TaskSpec(
        kind="binary", label_names=("y",), input_shape=(64,), modality="tabular", score_transform="binary_logit", default_architecture="mlp"
    )
    # MLP 64 -> 32 -> 32 -> 1: forward 2·Σab; backward 4·Σab except the first layer's unneeded input gradient (2·64·32)
    dims = [(64, 32), (32, 32), (32, 1)]
    expected = 6 * sum(a * b for a, b in dims) - 2 * 64 * 32
    assert training_flops_per_record("mlp", {"width": 32, "depth": 2}, tab) == expected
    c = pool_compute(200, 60, 111_706.5, 5.14e9)
    assert c.record_passes == 200 * 60 * 111_706.5 and c.flops == pytest.approx(c.record_passes * 5.14e9)
    line = describe_pool_compute(tab, "mlp", {"width": 32, "depth": 2}, TrainRecipe(epochs=10), [100, 300])
    assert "2 models × 10 epochs × 200 records = 4e+03 record passes" in line and "PFLOP" in line


def test_fast_path_is_on_by_default_on_cuda_only() -> None:
    from tasks.config import ExecutionConfig
    from tasks.training.shadow import on_for_device

    setting = ExecutionConfig().fast_path
    assert setting == "auto"
    assert on_for_device(setting, "cuda") and on_for_device(setting, "cuda:1")
    assert not on_for_device(setting, "cpu")  # CI and CPU users keep today's loop (bitwise as before)
    assert on_for_device(True, "cpu") and not on_for_device(False, "cuda")
    assert on_for_device("on", "cpu") and not on_for_device("off", "cuda")  # execution.compile's values

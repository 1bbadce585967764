"""Every training and scoring path on the model's device: the same tests on "cpu" and, where there is one, "cuda".

CI has no GPU, so the "cuda" cases skip there. What CUDA would catch -- a tensor made on the host (or on
the default device) meeting the model's tensors -- is checked on the CPU two ways:

* ``meta`` as a second device: the DP-SGD step runs with the model on the meta device (shapes only, no
  values); any tensor the step made on the host or forgot to move meets the model's meta tensors in an op
  and raises "expected all tensors on the same device" exactly as a CPU row fed to a CUDA model does
  (the original DP code fails this test: see ``test_dp_step_uses_only_the_models_device``);
* ``torch.set_default_device("meta")`` plus a dispatch mode that records the device of every tensor every
  op returns: a factory call without an explicit device (``torch.zeros(n)``) would make a meta tensor
  while the model is on the CPU, so "every op's output is on the model's device" means every tensor the
  path creates was put there on purpose.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tasks.config import TrainRecipe
from tasks.datasets import get_dataset
from tasks.datasets.base import TaskSpec
from tasks.training.dp import account, calibrate, dp_schedule, train_dp
from tasks.training.shadow import _PerSampleLoss, score_model, train_model

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]

IMAGE_TASK = TaskSpec(
    kind="multilabel",
    label_names=("a", "b"),
    input_shape=(1, 16, 16),
    modality="image",
    score_transform="multilabel_logit",
    default_architecture="small_cnn",
)


class DeviceAudit(TorchDispatchMode):
    """Records (op, device) of every tensor an op returns that is not on ``device``."""

    def __init__(self, device: str):
        super().__init__()
        self.device = torch.device(device)
        self.outputs = 0
        self.off_device: list[tuple[str, str]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.outputs += 1
                if t.device != self.device:
                    self.off_device.append((str(func), str(t.device)))
        return out


def _audited(fn: Any) -> DeviceAudit:
    """Run ``fn()`` on the CPU with the default device set to meta, auditing every op's output device."""
    audit = DeviceAudit("cpu")
    torch.set_default_device("meta")
    try:
        with audit:
            fn()
    finally:
        torch.set_default_device(None)
    return audit


def _image_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """8-bit-level images whose two labels each brighten one 4 x 4 patch (learnable, not trivially)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, 2)).astype(np.float32)
    x = rng.normal(0.0, 0.6, (n, 1, 16, 16))
    x[:, 0, 4:8, 4:8] += 0.5 * y[:, :1, None]
    x[:, 0, 9:13, 9:13] += 0.5 * y[:, 1:, None]
    return (np.rint((np.clip(x, -1, 1) + 1) * 127.5) / 127.5 - 1).astype(np.float32), y


def _tabular_data(n: int = 240) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 64)).astype(np.float32)
    return x, (x[:, :1] > 0).astype(np.float32), np.repeat(np.arange(n // 4), 4)


_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


# record-level DP on the CPU is tests/training/test_dp_and_capacity.py's (calibration dominates the time)
@pytest.mark.parametrize(
    ("device", "unit"), [("cpu", "patient"), pytest.param("cuda", "record", marks=_CUDA), pytest.param("cuda", "patient", marks=_CUDA)]
)
def test_dp_sgd_trains_on_the_device_with_the_accounted_epsilon(device: str, unit: str) -> None:
    task = get_dataset("mimic-iv-ed").task
    x, y, units = _tabular_data()
    recipe = TrainRecipe(epochs=2, batch_size=40, learning_rate=0.05, dp_epsilon=2.0, dp_unit=unit)
    model, stats = train_model(x, y, task, "mlp", {"width": 16}, recipe, 0, device, units=units)
    assert {p.device.type for p in model.parameters()} == {device}
    acc = stats["dp"]
    n_units = 240 if unit == "record" else 60
    q, steps = dp_schedule(n_units, round(40 * n_units / 240), 2)
    sigma = calibrate(2.0, 1 / n_units, q, steps)
    # the account is a function of (sigma, q, T, delta) alone: the device cannot change it
    assert (acc["n_units"], acc["steps"], acc["sampling_rate"]) == (n_units, steps, q)
    assert acc["noise_multiplier"] == pytest.approx(sigma)
    assert acc["epsilon"] == pytest.approx(account(sigma, q, steps, 1 / n_units)) and acc["epsilon"] <= 2.0 + 0.01
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _dp_step(model: nn.Module, task: TaskSpec, x: torch.Tensor, y: torch.Tensor, units: np.ndarray) -> None:
    train_dp(
        model,
        x,
        y,
        _PerSampleLoss(task),
        units,
        epsilon=2.0,
        delta=None,
        clip_norm=1.0,
        batch_units=10,
        epochs=1,
        lr_at=lambda step, total: 0.05,
        momentum=0.9,
        seed=3,
        unit_name="patient",
    )


def test_dp_step_uses_only_the_models_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole DP-SGD loop with the model on the meta device: host rows or host noise would raise."""
    import tasks.training.dp as dp

    task = get_dataset("mimic-iv-ed").task
    x, y, units = _tabular_data()
    # plain layers: the project's heads enter autocast for the tensor's device type, which meta has not
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1)).to("meta")
    monkeypatch.setattr(dp, "device_generator", lambda device, seed: None)  # meta has no generator; CPU/CUDA do
    _dp_step(model, task, torch.from_numpy(x), torch.from_numpy(y), units)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    # and on the CPU, under the meta default device: nothing the step creates lands off the model's device
    cpu_model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1))
    audit = _audited(lambda: _dp_step(cpu_model, task, torch.from_numpy(x), torch.from_numpy(y), units))
    assert audit.outputs > 500 and audit.off_device == []


def test_the_meta_check_catches_a_host_tensor_in_the_step() -> None:
    """Negative control: the old per-unit gradient (built without a device) fails the same check."""

    def host_sum() -> None:
        model = nn.Sequential(nn.Linear(64, 1))
        g = torch.zeros((4, *model[0].weight.shape))  # the old code: no device=
        g.index_add_(0, torch.zeros(240, dtype=torch.int64, device="cpu"), torch.ones(240, *model[0].weight.shape, device="cpu"))

    audit = DeviceAudit("cpu")
    torch.set_default_device("meta")
    try:
        with audit, pytest.raises(RuntimeError, match="device"):
            host_sum()
    finally:
        torch.set_default_device(None)
    assert ("aten.zeros.default", "meta") in audit.off_device


@pytest.mark.parametrize("device", DEVICES)
def test_fast_path_and_scoring_stay_on_the_device(device: str) -> None:
    from tasks.training.device_augment import DeviceAugmenter

    x, y = _image_data(128)
    recipe = TrainRecipe(epochs=2, batch_size=32, learning_rate=0.05, augment="strong", ema_decay=0.9, precision="bf16", channels_last=True)
    model, stats = train_model(x, y, IMAGE_TASK, "small_cnn", {"width_multiplier": 0.125}, recipe, 0, device, fast_path=True)
    assert stats["fast_path"] and {p.device.type for p in model.parameters()} == {device}
    logits = score_model(model, x, IMAGE_TASK, 3, 0, device, precision="bf16")
    assert logits.shape == (128, 3, 2) and np.isfinite(logits).all()
    if device != "cpu":
        return
    DeviceAugmenter("strong", IMAGE_TASK.input_shape, "cpu", 0)  # the policy's plan is built (on the host) outside the audit

    def run() -> None:
        m, _ = train_model(x, y, IMAGE_TASK, "small_cnn", {"width_multiplier": 0.125}, recipe, 1, "cpu", fast_path=True)
        # one view: the seeded "weak" views draw their parameters with v2's host-side
        # make_params, which relies on the default device being the CPU
        score_model(m, x, IMAGE_TASK, 1, 0, "cpu", precision="bf16")

    audit = _audited(run)
    assert audit.outputs > 1000 and audit.off_device == []


@pytest.mark.parametrize("device", DEVICES)
def test_todays_path_trains_and_scores_on_the_device(device: str) -> None:
    x, y = _image_data(96)
    recipe = TrainRecipe(epochs=1, batch_size=32, augment="medium", ema_decay=0.9)
    model, _ = train_model(x, y, IMAGE_TASK, "small_cnn", {"width_multiplier": 0.125}, recipe, 0, device)
    assert {p.device.type for p in model.parameters()} == {device}
    logits = score_model(model, x, IMAGE_TASK, 3, 0, device)
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("device", DEVICES)
def test_batched_pool_on_the_device(device: str) -> None:
    from tasks.training.batched import score_models_batched, train_models_batched

    task = get_dataset("mimic-iv-ed").task
    x, y, _ = _tabular_data()
    members = [np.arange(0, 160), np.arange(80, 240)]
    bm = train_models_batched(x, y, members, task, "mlp", {"width": 16}, TrainRecipe(epochs=2, batch_size=32), [0, 1], device=device)
    assert {t.device.type for t in bm.params.values()} == {device}
    logits = score_models_batched(bm, x, device)
    assert logits.shape == (2, 240, 1, 1) and np.isfinite(logits).all()


@pytest.mark.parametrize("device", DEVICES)
def test_audit_model_reference_loads_on_the_device(device: str, tmp_path: Any) -> None:
    """audit-model's state-dict target on the device scores like the same model on the CPU."""
    from tasks.audit.model_loading import load_model

    x, y = _image_data(64)
    model, _ = train_model(x, y, IMAGE_TASK, "small_cnn", {"width_multiplier": 0.125}, TrainRecipe(epochs=1, batch_size=32), 0)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    arch = {"name": "small_cnn", "params": {"width_multiplier": 0.125}}
    on_device = score_model(load_model(path, IMAGE_TASK, arch, device), x, IMAGE_TASK, 2, 0, device)
    on_cpu = score_model(load_model(path, IMAGE_TASK, arch, "cpu"), x, IMAGE_TASK, 2, 0, "cpu")
    np.testing.assert_allclose(on_device, on_cpu, rtol=1e-3, atol=1e-3)

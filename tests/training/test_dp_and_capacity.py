"""DP-SGD accounting against Opacus, and the paper's two trends on the synthetic ED cohort:
risk falls with epsilon, and grows with model capacity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tasks.attacks.record_auc import record_statistics
from tasks.attacks.scores import get_transform
from tasks.config import TrainRecipe
from tasks.datasets import get_dataset
from tasks.datasets.quarantine import Quarantine
from tasks.synthetic.mimic_iv_ed import write_ed_cohort
from tasks.training.dp import account, calibrate, dp_schedule
from tasks.training.masks import pool_masks
from tasks.training.shadow import score_model, train_model


def test_accounting_matches_opacus_privacy_engine() -> None:
    from opacus import PrivacyEngine

    torch.manual_seed(0)
    n, batch, epochs, eps, delta = 512, 64, 3, 4.0, 1e-3
    data = torch.utils.data.TensorDataset(torch.randn(n, 8), torch.randint(0, 2, (n,)))
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    model = nn.Linear(8, 2)
    engine = PrivacyEngine(accountant="rdp")
    model, opt, loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=loader,
        target_epsilon=eps,
        target_delta=delta,
        epochs=epochs,
        max_grad_norm=1.0,
    )
    for _ in range(epochs):
        for xb, yb in loader:
            if len(xb) == 0:
                continue
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    q, steps = dp_schedule(n, batch, epochs)
    assert q == pytest.approx(1 / len(loader)) and steps == epochs * len(loader)
    assert calibrate(eps, delta, q, steps) == pytest.approx(opt.noise_multiplier, rel=1e-6)
    assert account(opt.noise_multiplier, q, steps, delta) == pytest.approx(engine.get_epsilon(delta), rel=1e-6)
    assert account(opt.noise_multiplier, q, steps, delta) <= eps + 0.01


def test_patient_level_dp_clips_whole_patients() -> None:
    """Patient-level DP counts patients, not records: fewer units, so more noise for the same epsilon."""
    task = get_dataset("mimic-iv-ed").task
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 64)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    units = np.repeat(np.arange(100), 6)
    out = {}
    for unit in ("record", "patient"):
        recipe = TrainRecipe(epochs=2, batch_size=60, learning_rate=0.05, dp_epsilon=2.0, dp_unit=unit)
        _, stats = train_model(x, y, task, "mlp", {"width": 16}, recipe, 0, units=units)
        out[unit] = stats["dp"]
    assert out["record"]["n_units"] == 600 and out["patient"]["n_units"] == 100
    for acc in out.values():
        assert acc["epsilon"] == pytest.approx(2.0, abs=0.05)
        assert 0.5 < acc["auc_bound"] <= 1.0
    assert out["patient"]["sampling_rate"] == pytest.approx(0.1)


def _pool_risk(tmp_path, arch: dict, recipe: TrainRecipe, n_models: int = 8) -> np.ndarray:
    raw = tmp_path / "raw"
    if not raw.exists():
        write_ed_cohort(raw, 300, seed=5)
    adapter = get_dataset("mimic-iv-ed")
    rec = adapter.read_records(raw, Quarantine())
    rec = rec[rec["split"] == "train"].reset_index(drop=True)
    x = adapter.decode_inputs(rec, raw).x
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
    y = rec[["y_outcome_hospitalization"]].to_numpy()
    codes = pd.factorize(rec["raw_patient_id"])[0]
    masks = pool_masks(codes.max() + 1, 0, n_models)[:, codes]
    scores = np.zeros((n_models, len(rec), 1))
    for m in range(n_models):
        model, _ = train_model(x[masks[m]], y[masks[m]], adapter.task, arch["name"], arch["params"], recipe, m, units=codes[masks[m]])
        scores[m], _ = get_transform("binary_logit")(score_model(model, x.astype(np.float32), adapter.task, 1, 0), y)
    return record_statistics(scores, masks)["auc"].to_numpy()


@pytest.mark.slow
@pytest.mark.heavy
def test_risk_falls_as_epsilon_falls(tmp_path) -> None:
    arch = {"name": "mlp", "params": {"width": 128}}
    base = {"epochs": 30, "batch_size": 64, "learning_rate": 0.05, "weight_decay": 0.0}
    risk_inf = _pool_risk(tmp_path, arch, TrainRecipe(**base))
    risk_eps1 = _pool_risk(tmp_path, arch, TrainRecipe(**base, dp_epsilon=1.0, dp_clip_norm=1.0, dp_unit="patient"))
    assert np.nanmean(risk_eps1) < np.nanmean(risk_inf) - 0.05
    assert np.nanquantile(risk_eps1, 0.99) < np.nanquantile(risk_inf, 0.99)


@pytest.mark.slow
@pytest.mark.heavy
def test_larger_architecture_exposes_more_patients(tmp_path) -> None:
    recipe = TrainRecipe(epochs=40, batch_size=64, learning_rate=0.02, weight_decay=1e-4)
    small = _pool_risk(tmp_path, {"name": "mlp", "params": {"width": 8, "depth": 1}}, recipe)
    large = _pool_risk(tmp_path, {"name": "mlp", "params": {"width": 512, "depth": 3}}, recipe)
    assert (large >= 0.9).sum() > (small >= 0.9).sum()
    assert np.nanmean(large) > np.nanmean(small)

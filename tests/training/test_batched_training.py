"""Batched shadow training (tasks/training/batched.py) against the one-by-one path on the synthetic ED cohort:
same models up to float rounding, same shard/meta files, per-model member sets, seeds and step counts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.attacks.scores import get_transform
from tasks.config import TrainRecipe
from tasks.datasets import get_dataset
from tasks.ingest.snapshot import build_snapshot
from tasks.synthetic.mimic_iv_ed import write_ed_cohort
from tasks.training.batched import batching_blocker, train_models_batched, train_shadow_models
from tasks.training.masks import model_seed, pool_masks
from tasks.training.pool import training_patients
from tasks.training.shadow import ShadowJob, train_model, train_shadow_model

N_MODELS = 4
ARCH = {"width": 64}
RECIPE = TrainRecipe(epochs=12, batch_size=32, learning_rate=0.05)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("batched")
    write_ed_cohort(tmp / "raw", 400, seed=5)
    snap = build_snapshot(get_dataset("mimic-iv-ed"), tmp / "raw", tmp / "results", b"batched-training-test-secret-012")
    train_idx, order, codes = training_patients(snap.records)
    masks = pool_masks(len(order), 0, N_MODELS)
    members = [train_idx[masks[m][codes]] for m in range(N_MODELS)]
    jobs = [
        ShadowJob("pool", m, model_seed(0, m), str(snap.path), "mlp", ARCH, RECIPE.model_dump(mode="json"), 1, members[m], str(tmp / "x"))
        for m in range(N_MODELS)
    ]
    return {"tmp": tmp, "snap": snap, "jobs": jobs, "members": members, "train_idx": train_idx}


def _in_dir(jobs: list[ShadowJob], shard_dir: Path) -> list[ShadowJob]:
    return [dataclasses.replace(j, shard_dir=str(shard_dir)) for j in jobs]


def _logits(meta: dict) -> np.ndarray:
    col = pq.read_table(meta["shard"]).column("logits").combine_chunks()
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), meta["n_views"], meta["n_outputs"])


@pytest.fixture(scope="module")
def trained(pool: dict) -> dict:
    batched = train_shadow_models(_in_dir(pool["jobs"], pool["tmp"] / "batched"))
    single = [train_shadow_model(j) for j in _in_dir(pool["jobs"], pool["tmp"] / "single")]
    return {"batched": batched, "single": single}


def test_the_pool_is_batchable_and_members_differ(pool: dict) -> None:
    assert batching_blocker(pool["jobs"]) is None
    sizes = {len(m) for m in pool["members"]}
    assert len(sizes) > 1  # complementary halves of patients hold different numbers of records


def test_same_files_shapes_and_metadata_as_one_by_one(pool: dict, trained: dict) -> None:
    n = len(pool["snap"].records)
    for b, s in zip(trained["batched"], trained["single"], strict=True):
        assert set(b) == set(s)
        assert Path(b["shard"]).exists() and Path(b["shard"]).with_suffix(".json").exists()
        assert json.loads(Path(b["shard"]).with_suffix(".json").read_text()) == b
        assert Path(b["shard"]).name == Path(s["shard"]).name
        for key in ("model_idx", "seed", "n_train_records", "epochs", "checkpoint", "n_views", "n_outputs", "code_version"):
            assert b[key] == s[key], key
        assert b["train_info"]["batched"] == N_MODELS and b["train_seconds"] > 0
        assert b["train_loss"] == pytest.approx(s["train_loss"], rel=1e-3, abs=1e-4)
        lb, ls = _logits(b), _logits(s)
        assert lb.dtype == np.float32 and lb.shape == ls.shape == (n, 1, 1)


def test_batched_models_equal_one_by_one_models_up_to_rounding(trained: dict) -> None:
    for b, s in zip(trained["batched"], trained["single"], strict=True):
        lb, ls = _logits(b), _logits(s)
        assert np.abs(lb - ls).max() < 1e-2
        assert np.corrcoef(lb.ravel(), ls.ravel())[0, 1] > 0.9999
        assert b["test_auroc"] == pytest.approx(s["test_auroc"], abs=0.005)
        assert b["test_auroc"] > 0.7  # a useful model, not just an identical one


def test_each_model_scores_its_own_members_higher(pool: dict, trained: dict) -> None:
    labels = pool["snap"].labels()
    train_idx = pool["train_idx"]
    scores = np.stack([get_transform("binary_logit")(_logits(m), labels)[0][:, 0] for m in trained["batched"]])  # (M, N)
    member = np.zeros(scores.shape, dtype=bool)
    for m, mem in enumerate(pool["members"]):
        member[m, mem] = True
    for m in range(N_MODELS):
        own, other = member[m, train_idx], ~member[m, train_idx]
        assert scores[m, train_idx][own].mean() > scores[m, train_idx][other].mean() + 0.1
        # against its complementary partner, on the records only one of them saw
        partner = m ^ 1
        assert scores[m, train_idx][own].mean() > scores[partner, train_idx][own].mean() + 0.1


def test_deterministic_for_the_same_seeds(pool: dict, trained: dict) -> None:
    again = train_shadow_models(_in_dir(pool["jobs"][:2], pool["tmp"] / "again"))
    for a, b in zip(again, trained["batched"][:2], strict=True):
        np.testing.assert_array_equal(_logits(a), _logits(b))
    other_seed = [dataclasses.replace(j, seed=j.seed + 1) for j in pool["jobs"][:2]]
    changed = train_shadow_models(_in_dir(other_seed, pool["tmp"] / "seeded"))
    assert not np.array_equal(_logits(changed[0]), _logits(trained["batched"][0]))


@pytest.mark.parametrize(
    "recipe",
    [
        TrainRecipe(epochs=3, batch_size=16, learning_rate=0.05, weight_decay=1e-3, momentum=0.9),
        TrainRecipe(epochs=3, batch_size=16, learning_rate=0.05, ema_decay=0.9, grad_accum_steps=3, schedule="cosine", momentum=0.0),
    ],
    ids=["sgd-momentum-wd", "ema-accum-no-momentum"],
)
def test_uneven_member_counts_take_each_models_own_steps(recipe: TrainRecipe) -> None:
    """Members of 70, 130 and 200 rows: each model takes its own steps (padding steps change nothing)."""
    task = get_dataset("mimic-iv-ed").task
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 64)).astype(np.float32)
    y = (x[:, :1] + rng.normal(size=(300, 1)) > 0).astype(np.float32)
    members = [np.sort(rng.choice(300, k, replace=False)) for k in (70, 130, 200)]
    seeds = [3, 4, 5]
    bm = train_models_batched(x, y, members, task, "mlp", {"width": 32}, recipe, seeds)
    for m, (mem, seed) in enumerate(zip(members, seeds, strict=True)):
        model, stats = train_model(x[mem], y[mem], task, "mlp", {"width": 32}, recipe, seed)
        assert bm.stats[m]["steps"] == stats["steps"]
        for name, p in model.named_parameters():
            np.testing.assert_allclose(bm.params[name][m].numpy(), p.detach().numpy(), atol=1e-5, err_msg=name)


def test_tabresnet_is_batched_too() -> None:
    task = get_dataset("mimic-iv-ed").task
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 64)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    members = [np.arange(0, 120), np.arange(60, 200)]
    recipe = TrainRecipe(epochs=1, batch_size=32)
    arch = {"width": 20, "blocks": 2, "groups": 4}
    bm = train_models_batched(x, y, members, task, "tabresnet", arch, recipe, [0, 1])
    assert bm.mlp_layers is None  # the generic vmap path
    for m, mem in enumerate(members):
        model, _ = train_model(x[mem], y[mem], task, "tabresnet", arch, recipe, m)
        for name, p in model.named_parameters():
            np.testing.assert_allclose(bm.params[name][m].numpy(), p.detach().numpy(), atol=1e-5, err_msg=name)


def test_diverged_models_raise_like_train_model(pool: dict) -> None:
    jobs = [dataclasses.replace(j, recipe={**j.recipe, "learning_rate": 1e6, "epochs": 2}) for j in pool["jobs"][:2]]
    with pytest.raises(FloatingPointError, match="diverged"):
        train_shadow_model(_in_dir(jobs, pool["tmp"] / "diverged-single")[0])
    with pytest.raises(FloatingPointError, match="diverged for model 0"):
        train_shadow_models(_in_dir(jobs, pool["tmp"] / "diverged"))
    assert not list((pool["tmp"] / "diverged").glob("model_*.parquet"))


def test_fallbacks_and_refusals(pool: dict) -> None:
    jobs = pool["jobs"][:2]
    dp = [dataclasses.replace(j, recipe={**j.recipe, "dp_epsilon": 4.0}) for j in jobs]
    assert "DP" in batching_blocker(dp)
    assert "dropout" in batching_blocker([dataclasses.replace(j, arch_params={"width": 16, "dropout": 0.2}) for j in jobs])
    assert "fewer than two" in batching_blocker(jobs[:1])
    huge = {**jobs[0].recipe, "batch_size": 10_000}
    assert "fewer members" in batching_blocker([dataclasses.replace(j, recipe=huge) for j in jobs])
    assert train_shadow_models([]) == []
    with pytest.raises(ValueError, match="one pool"):
        train_shadow_models([jobs[0], dataclasses.replace(jobs[1], architecture="tabresnet")])
    with pytest.raises(ValueError, match="duplicate"):
        train_shadow_models([jobs[0], jobs[0]])
    # a fallback still writes the shards, through train_shadow_model
    small_dp = [dataclasses.replace(j, recipe={**j.recipe, "dp_epsilon": 4.0, "epochs": 1}) for j in jobs]
    metas = train_shadow_models(_in_dir(small_dp, pool["tmp"] / "dp"))
    assert [m["model_idx"] for m in metas] == [0, 1]
    assert all(m["train_info"].get("dp") and Path(m["shard"]).exists() for m in metas)


@pytest.mark.slow
@pytest.mark.parametrize("per_task", [1, 4])
def test_train_pool_with_models_per_task_stores_every_model(tmp_path: Path, per_task: int) -> None:
    """flows/audit.py train_pool (pool_runner.plan_tasks): models_per_task=4 submits chunks of 4 and 2 models; 1 = one per model."""
    import duckdb
    from prefect import flow

    from flows.audit import train_pool
    from tasks.config import AuditConfig
    from tasks.storage.store import AuditStore
    from tasks.training.pool import pool_key_for

    write_ed_cohort(tmp_path / "raw", 120, seed=2)
    cfg = AuditConfig.model_validate(
        {
            "dataset": "mimic-iv-ed",
            "raw_dir": str(tmp_path / "raw"),
            "results_dir": str(tmp_path / "results"),
            "pool": {
                "n_models": 6,
                "n_targets": 2,
                "architecture": {"name": "mlp", "params": {"width": 16}},
                "recipe": {"epochs": 2, "batch_size": 16},
            },
            "execution": {"models_per_task": per_task},
        }
    )
    snap = build_snapshot(get_dataset("mimic-iv-ed"), cfg.raw_dir, cfg.results_dir, b"batched-training-test-secret-012")

    @flow
    def train(cfg_dict: dict) -> dict:
        c = AuditConfig.model_validate(cfg_dict)
        key, n_views = pool_key_for(c, snap)
        with AuditStore(c.db_path) as store:
            store.register_snapshot(snap)
            return {"key": key, **train_pool(c, snap, store, key, n_views, show_progress=False)}

    out = train(cfg.model_dump(mode="json"))
    assert out["trained"] == 6 and out["failed"] == 0
    with duckdb.connect(str(cfg.db_path), read_only=True) as con:
        rows = con.execute("SELECT model_idx, train_info FROM models WHERE pool_key = ? ORDER BY model_idx", [out["key"]]).fetchall()
    assert [r[0] for r in rows] == list(range(6))
    assert [json.loads(r[1]).get("batched") for r in rows] == ([4, 4, 4, 4, 2, 2] if per_task == 4 else [None] * 6)

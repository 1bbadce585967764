"""tasks/training/pool_runner.py: which models remain, recovering finished shards, the task plan and the
failure policy, without Prefect, Dask or a database."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.attacks.scores import score_and_probability
from tasks.config import AuditConfig
from tasks.errors import MedauditError
from tasks.training.pool_runner import (
    TrainingTally,
    finished_shards,
    load_shard,
    missing_models,
    plan_tasks,
    shadow_jobs,
)
from tasks.training.shadow import ShadowJob


def _shard(shard_dir: Path, model_idx: int, logits: np.ndarray, *, with_meta: bool = True, with_shard: bool = True) -> dict[str, Any]:
    """A shard as tasks/training/shadow.py:write_shard leaves it: Parquet logits (N, V*C) and its JSON meta."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    n, v, c = logits.shape
    path = shard_dir / f"model_{model_idx:05d}.parquet"
    meta = {"model_idx": model_idx, "n_views": v, "n_outputs": c, "shard": str(path)}
    if with_shard:
        col = pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1).astype(np.float32)), v * c).cast(pa.list_(pa.float32()))
        pq.write_table(pa.table({"record_idx": pa.array(np.arange(n, dtype=np.int64)), "logits": col}), path)
    if with_meta:
        path.with_suffix(".json").write_text(json.dumps(meta))
    return meta


def test_only_shards_with_their_meta_are_recovered_in_model_order(tmp_path: Path) -> None:
    z = np.zeros((3, 1, 1))
    _shard(tmp_path, 4, z)
    _shard(tmp_path, 1, z)
    _shard(tmp_path, 2, z, with_meta=False)  # not written by write_shard: no meta, not a finished model
    _shard(tmp_path, 3, z, with_shard=False)  # meta written, shard not yet moved into place: unfinished
    assert [m["model_idx"] for m in finished_shards(tmp_path)] == [1, 4]
    assert finished_shards(tmp_path / "absent") == []


def test_load_shard_stores_the_transformed_logits_and_removes_the_files(tmp_path: Path) -> None:
    logits = np.array([[[2.0]], [[-1.0]], [[0.0]]])
    labels = np.array([[1.0], [0.0], [1.0]])
    meta = _shard(tmp_path, 7, logits)
    calls: list[tuple] = []

    def store_shard(model_idx: int, shard: Path, m: dict, scores: np.ndarray, probs: np.ndarray, flags: np.ndarray) -> bool:
        calls.append((model_idx, shard, m, scores, probs, flags))
        return True

    assert load_shard(meta, labels, "binary_logit", store_shard) is True
    (model_idx, shard, m, scores, probs, flags) = calls[0]
    assert (model_idx, shard, m) == (7, Path(meta["shard"]), meta)
    want = score_and_probability("binary_logit", logits.astype(np.float32), labels)
    for got, expected in zip((scores, probs, flags), want, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert probs.shape == (3, 1) and probs[0, 0] > probs[1, 0] > probs[2, 0]  # P(true label): the surest right first
    assert not list(tmp_path.iterdir())


def test_missing_models_are_those_not_stored() -> None:
    assert missing_models(6, [0, 2, 3]) == [1, 4, 5]
    assert missing_models(3, iter([2, 1, 0])) == []


def _jobs(n: int, recipe: dict[str, Any]) -> list[ShadowJob]:
    return [ShadowJob("k", m, m, "/nowhere", "mlp", {}, recipe, 1, np.arange(3)) for m in range(n)]


def test_plan_tasks_chunks_batchable_jobs_and_says_why_it_does_not() -> None:
    plain = {"epochs": 1}
    one = plan_tasks(_jobs(5, plain), 1)
    assert not one.batched and [len(c) for c in one.chunks] == [1] * 5 and one.not_batched is None
    dp = plan_tasks(_jobs(5, {"epochs": 1, "dp_epsilon": 8.0}), 4)
    assert not dp.batched and [len(c) for c in dp.chunks] == [1] * 5 and "DP-SGD" in (dp.not_batched or "")
    # a single remaining model keeps the batched task of models_per_task > 1 (nothing to check it against)
    single = plan_tasks(_jobs(1, plain), 4)
    assert single.batched and [len(c) for c in single.chunks] == [1]


def test_shadow_jobs_train_each_model_on_its_in_patients(tmp_path: Path) -> None:
    cfg = AuditConfig.model_validate(
        {
            "dataset": "mimic-iv-ed",
            "raw_dir": str(tmp_path),
            "results_dir": str(tmp_path),
            "pool": {"n_models": 8, "n_targets": 2, "seed": 3, "architecture": {"name": "mlp", "params": {"width": 8}}},
        }
    )
    masks = np.array([[True, False, True], [False, True, False], [True, True, False], [False, False, True]])
    train_idx, codes = np.array([10, 11, 12, 13]), np.array([0, 1, 1, 2])  # records 11 and 12 are one patient
    snapshot = SimpleNamespace(path=tmp_path / "snap")
    jobs = shadow_jobs(cfg, snapshot, "k", 1, masks, train_idx, codes, [1, 3], tmp_path / "shards")  # type: ignore[arg-type]
    assert [j.model_idx for j in jobs] == [1, 3]
    assert [j.member_records.tolist() for j in jobs] == [[11, 12], [13]]
    assert len({j.seed for j in jobs}) == 2 and all(j.shard_dir == str(tmp_path / "shards") for j in jobs)


def test_failed_tasks_are_counted_and_a_disk_error_stops_the_run(tmp_path: Path) -> None:
    tally = TrainingTally(6, tmp_path)
    tally.stored(2, 2)
    tally.failed(RuntimeError("worker lost"), 3)
    assert (tally.trained, tally.finished, tally.n_failed) == (2, 5, 3)
    with pytest.raises(MedauditError, match=r"3 of 6 shadow models failed \(first: RuntimeError: worker lost\); the 2 finished"):
        tally.raise_if_failed()
    with pytest.raises(MedauditError, match=r"No space left on device.*rerun to train only the missing") as err:
        tally.failed(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model_00001.parquet")), 1)
    assert str(tmp_path / "model_00001.parquet") in str(err.value)
    TrainingTally(2, tmp_path).raise_if_failed()  # nothing failed: nothing raised

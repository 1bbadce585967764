"""Pool keys do not move when the code around them is tidied: nothing retrains.

The keys below were computed before ``PoolConfig.score_split`` was retired, for every demo pool, on a
stand-in snapshot (the key hashes the snapshot's version, modality and score transform, not its rows).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from tasks.config import AuditConfig
from tasks.datasets import get_dataset
from tasks.synthetic import synthetic_datasets
from tasks.synthetic.demo_pools import demo_pool
from tasks.training.pool import pool_key_for

RECORDED_DEMO_KEYS = {
    "chexpert": ("f8556c00d0a7d7cc", 2),
    "embed": ("9c48e328b29f5777", 2),
    "fairvision": ("9c48e328b29f5777", 2),
    "fitzpatrick": ("9c48e328b29f5777", 2),
    "mimic-cxr": ("f8556c00d0a7d7cc", 2),
    "mimic-iv-ed": ("1ca491f354b70d87", 1),
    "ptb-xl": ("224b743de5c34c77", 1),
}


def _snapshot(dataset: str) -> SimpleNamespace:
    task = get_dataset(dataset).task
    return SimpleNamespace(version="v0", task=SimpleNamespace(modality=task.modality, score_transform=task.score_transform))


def _config(dataset: str, **pool_extra: object) -> AuditConfig:
    return AuditConfig.model_validate({"dataset": dataset, "raw_dir": "raw", "pool": {**demo_pool(dataset), **pool_extra}})


@pytest.mark.parametrize("dataset", sorted(RECORDED_DEMO_KEYS))
def test_demo_pool_keys_are_the_recorded_ones(dataset: str) -> None:
    assert dataset in synthetic_datasets()
    assert pool_key_for(_config(dataset), _snapshot(dataset)) == RECORDED_DEMO_KEYS[dataset]


def test_a_config_written_with_the_retired_score_split_loads_with_the_same_key() -> None:
    # configs, stored audits and deployments written before the field was retired carry score_split: train
    old = _config("chexpert", score_split="train")
    assert old == _config("chexpert")
    assert "score_split" not in old.model_dump(mode="json")["pool"]
    assert pool_key_for(old, _snapshot("chexpert")) == RECORDED_DEMO_KEYS["chexpert"]
    with pytest.raises(ValidationError, match="score_split"):
        _config("chexpert", score_split="test")  # never a valid value, still refused

"""The attack interface and registry (tasks/attacks/base.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.attacks import base
from tasks.attacks.base import Attack, AttackContext, AttackInputs, get_attack, list_attacks, register_attack, start_attacks, view_mean


class _Probe(Attack):
    name = "probe"
    needs = "probs"

    def score(self, inputs: AttackInputs) -> np.ndarray:
        return np.asarray(inputs.target_probs)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "ATTACK_REGISTRY", {audit: dict(attacks) for audit, attacks in base.ATTACK_REGISTRY.items()})


def test_registry_rejects_a_second_name_and_unknown_needs(registry: None) -> None:
    register_attack(_Probe)
    assert get_attack("probe", "model") is _Probe and list_attacks("pool")[-1] is _Probe
    with pytest.raises(ValueError, match="registered twice"):
        register_attack(_Probe)
    bad = type("Bad", (_Probe,), {"name": "bad", "needs": "logits"})
    with pytest.raises(ValueError, match="needs must be one of"):
        register_attack(bad)
    with pytest.raises(KeyError, match=r"unknown pool attack 'nope'; registered: .*lira_online"):
        get_attack("nope", "pool")


def test_start_attacks_gives_fresh_objects_score_attacks_first(registry: None) -> None:
    register_attack(_Probe)
    ctx = AttackContext("pool", 1, "binary_logit")
    runs = start_attacks(ctx)
    needs = [run.needs for run in runs.values()]
    assert needs == sorted(needs, key=("scores", "probs").index) and list(runs)[-3:] == ["rmia_online", "rmia_offline", "probe"]
    assert runs["probe"].context is ctx and start_attacks(ctx)["lira_online"] is not runs["lira_online"]


def test_shared_computes_once_per_block_and_view_mean_skips_missing_views() -> None:
    inputs = AttackInputs(np.zeros((1, 2), dtype=bool))
    calls: list[int] = []
    assert inputs.shared("k", lambda: calls.append(1) or 5) == 5 and inputs.shared("k", lambda: calls.append(1) or 6) == 5
    assert calls == [1] and AttackInputs(np.zeros((1, 2), dtype=bool)).shared("k", lambda: 7) == 7
    out = view_mean(np.array([[[1.0, np.nan], [np.nan, np.nan]]]))
    assert out[0, 0] == 1.0 and np.isnan(out[0, 1])

"""Adding an attack is one new file: an attack registered here, in the test module, runs in both audits and has
its rows in both audits' attack summaries, without a line of either audit changed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tasks.attacks import base
from tasks.attacks.base import Attack, AttackInputs, register_attack
from tasks.attacks.loss import loss_attack
from tasks.audit.model_audit import analyze_model
from tasks.audit.pool_audit import audit_pool
from tasks.config import AttackConfig, ReportConfig


@pytest.fixture
def negated_loss(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Attack]]:
    """A test-only attack, registered on a copy of the registry (so no other test sees it)."""
    monkeypatch.setattr(base, "ATTACK_REGISTRY", {audit: dict(attacks) for audit, attacks in base.ATTACK_REGISTRY.items()})

    @register_attack
    class NegatedLoss(Attack):
        name = "negated_loss"
        version = "7"

        def score(self, inputs: AttackInputs) -> np.ndarray:
            return -loss_attack(inputs.target_scores)

    yield NegatedLoss


def test_a_registered_attack_runs_in_the_pool_audit(cohort: Any, report: ReportConfig, negated_loss: type[Attack]) -> None:
    result = audit_pool(cohort.snapshot, cohort.pool_scores(), AttackConfig(), report)
    summary = result.attack_summary.set_index(["attack", "level"])
    order = list(dict.fromkeys(result.attack_summary["attack"]))
    assert order.index("negated_loss") == order.index("loss") + 1 < order.index("rmia_online")  # a score attack: first pass
    assert ("negated_loss", "patient") not in summary.index  # not a log-likelihood ratio
    np.testing.assert_allclose(summary.loc[("negated_loss", "record"), "auc_mean"], 1.0 - summary.loc[("loss", "record"), "auc_mean"])
    rows = result.attack_results[result.attack_results["attack"] == "negated_loss"]
    assert rows["attack_version"].tolist() == ["7", "7"] and rows["target_model"].tolist() == [0, 1]


def test_a_registered_attack_runs_in_the_model_audit(cohort: Any, report: ReportConfig, negated_loss: type[Attack]) -> None:
    """Model 0 is the audited model (its members: its training patients), models 2.. the references."""
    snapshot, scores = cohort.snapshot, cohort.scores
    y = snapshot.records["y_outcome"].to_numpy() > 0.5
    logits = np.where(y[:, None], scores[0], -scores[0])[:, :, None].astype(np.float32)  # binary_logit of it is scores[0]
    ref_scores = scores[2:]
    ref_probs = 1.0 / (1.0 + np.exp(-ref_scores))
    kw = {"variance": "auto", "attack": AttackConfig(), "report": report}
    result = analyze_model(snapshot, logits, cohort.ref_in[0], ref_scores, ref_probs, cohort.ref_in[2:], **kw)
    attacks = result.attacks.set_index(["attack", "level"])
    assert set(attacks.index) == {(a, lv) for a in ("lira_offline", "loss", "rmia_offline", "negated_loss") for lv in ("record", "patient")}
    np.testing.assert_allclose(attacks.loc[("negated_loss", "record"), "auc"], 1.0 - attacks.loc[("loss", "record"), "auc"])
    pat = result.patients.iloc[: len(cohort.planted)]  # the training patients, in code order
    exposed = pat["member"].to_numpy() & cohort.planted
    assert exposed.sum() >= 3 and np.median(pat["risk"][exposed]) > 0.9 > np.median(pat["risk"][pat["member"].to_numpy() & ~cohort.planted])
    assert result.headline["rmia_note"].startswith("population: 60 test-split non-members, a = ")

"""LOSS baseline attack (Yeom et al. 2018): the score itself is the membership signal (design D15)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.attacks.base import Attack, AttackInputs, register_attack


def loss_attack(target_scores: np.ndarray) -> np.ndarray:
    """View-mean of the target models' own scores.

    target_scores: (T, N, V) (or (T, N) for a single view) -> (T, N) float64.

    The scores are correct-class logits (``tasks.attacks.scores``), so a higher score means a lower loss and
    hence "member". A record with a NaN score in any view gets NaN.
    """
    s = np.asarray(target_scores, dtype=np.float64)
    if s.ndim == 2:
        return s.copy()
    if s.ndim != 3:
        raise ValueError(f"target_scores must have shape (T, N, V), got {s.shape}")
    return s.mean(axis=2)


@register_attack
class Loss(Attack):
    """LOSS on the target models' own scores; needs no reference model."""

    name = "loss"

    def score(self, inputs: AttackInputs) -> np.ndarray:
        return loss_attack(inputs.target_scores)

    def params(self, n_reference_models: int) -> dict[str, Any]:
        return {"score": self.context.score_transform, "views": "mean"}

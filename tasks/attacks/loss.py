"""LOSS baseline attack (Yeom et al. 2018): the score itself is the membership signal (design D15)."""

from __future__ import annotations

import numpy as np


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

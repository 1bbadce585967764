"""Complementary patient-level membership masks (design D6) and per-model seeds (design D7).

Models 2k and 2k+1 split the patients into two random halves drawn from SeedSequence([seed, k]),
so every patient is IN for exactly half of any even number of models, and a pool grows from N to
M models without changing the first N masks. Records inherit their patient's mask.
"""

from __future__ import annotations

import numpy as np


def pair_masks(n_patients: int, seed: int, pair: int) -> np.ndarray:
    """(2, P) bool: the two complementary halves of pair ``pair``.

    With an odd P the leftover patient goes to one side at random (still IN for exactly one of the two).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, pair]))
    order = rng.permutation(n_patients)
    half = n_patients // 2 + (int(rng.integers(2)) if n_patients % 2 else 0)
    first = np.zeros(n_patients, dtype=bool)
    first[order[:half]] = True
    return np.stack([first, ~first])


def pool_masks(n_patients: int, seed: int, n_models: int) -> np.ndarray:
    """(M, P) bool masks for models 0..M-1 (M even)."""
    if n_models % 2:
        raise ValueError(f"n_models must be even for complementary masks, got {n_models}")
    return np.concatenate([pair_masks(n_patients, seed, k) for k in range(n_models // 2)]) if n_models else np.zeros((0, n_patients), bool)


def record_masks(patient_masks: np.ndarray, patient_codes: np.ndarray) -> np.ndarray:
    """(M, P) patient masks -> (M, N) record masks; ``patient_codes`` (N,) maps records to patients."""
    return patient_masks[:, patient_codes]


def model_seed(pool_seed: int, model_idx: int) -> int:
    """Seed of one model's init, shuffling and augmentation, derived from the pool seed (design D7)."""
    return int(np.random.SeedSequence([pool_seed, 1, model_idx]).generate_state(1, dtype=np.uint64)[0] >> 1)

"""A simulated pool on a hand-made snapshot, as arrays: the pool audit's and the model audit's inputs without a store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.audit.pool_audit import PoolScores
from tasks.audit.simulate import simulate_pool
from tasks.config import ReportConfig
from tasks.datasets.base import TaskSpec
from tasks.ingest.snapshot import Snapshot
from tasks.training.masks import pool_masks

N_PATIENTS = 120
N_MODELS = 16
N_TARGETS = 2
N_TEST = 60
BLOCK = 100  # records per score block: the pool is streamed in several blocks


@dataclass
class SimulatedCohort:
    snapshot: Snapshot
    scores: np.ndarray  # (M, N, 1) correct-class logits of every model on every record (train, then test)
    ref_in: np.ndarray  # (M, N) bool
    masks: np.ndarray  # (M, P) bool
    planted: np.ndarray  # (P,) bool: memorised patients
    n_train: int

    def blocks(self, values: np.ndarray, idx: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(idx[a : a + BLOCK], values[:, idx[a : a + BLOCK]]) for a in range(0, len(idx), BLOCK)]

    def pool_scores(self) -> PoolScores:
        """The whole cohort as the pool audit's input: models 0 and 1 are the held-out targets."""
        probs = 1.0 / (1.0 + np.exp(-self.scores))
        train, test = np.arange(self.n_train), np.arange(self.n_train, self.scores.shape[1])
        return PoolScores(
            models=list(range(N_MODELS)),
            n_targets=N_TARGETS,
            n_views=1,
            masks=self.masks,
            score_blocks=self.blocks(self.scores, train),
            prob_blocks=self.blocks(probs, train),
            population=self.blocks(probs, test),
            n_population=len(test),
        )


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCohort:
    """120 patients (planted 10% memorised at record AUC 0.99) in the training split, 60 test records, 16 models."""
    sim = simulate_pool(N_PATIENTS, N_MODELS, planted_share=0.1, planted_auc=0.99, seed=3)
    n_train = sim.codes.size
    rng = np.random.default_rng(4)
    test_scores = rng.normal(0, 2, N_TEST)[None, :, None] + rng.normal(size=(N_MODELS, N_TEST, 1))
    records = pd.DataFrame(
        {
            "record_idx": np.arange(n_train + N_TEST),
            "patient_key": [f"p{c:04d}" for c in sim.codes] + [f"t{i:04d}" for i in range(N_TEST)],
            "split": ["train"] * n_train + ["test"] * N_TEST,
            "y_outcome": rng.integers(0, 2, n_train + N_TEST).astype(np.float64),
            "sex": rng.choice(["F", "M"], n_train + N_TEST),
        }
    )
    path = tmp_path_factory.mktemp("snapshot")
    records.to_parquet(path / "records.parquet")
    task = TaskSpec("binary", ("outcome",), (4,), "tabular", "binary_logit", "mlp")
    snapshot = Snapshot("simulated", "v1", Path(path), task, ("sex",), None, len(records), 0)
    masks = pool_masks(N_PATIENTS, 3, N_MODELS)
    ref_in = np.zeros((N_MODELS, len(records)), dtype=bool)
    ref_in[:, :n_train] = sim.in_mask
    assert (masks[:, sim.codes] == sim.in_mask).all()
    scores = np.concatenate([sim.scores, test_scores], axis=1)
    return SimulatedCohort(snapshot, scores, ref_in, masks, sim.planted, n_train)


@pytest.fixture
def report() -> ReportConfig:
    return ReportConfig(bootstrap_samples=100, null_swaps=20, min_cell=5, top_fraction=0.1)

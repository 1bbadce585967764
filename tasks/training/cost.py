"""What a pool will cost before it trains: models × epochs × records, and FLOPs where they can be counted.

``training_flops_per_record`` counts one training record's forward + backward FLOPs of an architecture
with torch's ``FlopCounterMode`` on fake tensors (shapes only; matmuls and convolutions; the elementwise work of norms and activations
is not counted, so it is a lower bound of the arithmetic and the usual basis of "% of peak"), once per
(architecture, params, shape) and process. WRN-28-2 on 1 × 64 × 64 inputs counts 5.14 GFLOP a record.
``pool_compute`` turns it into record passes and FLOPs; ``describe_pool_compute`` is the one line the
audit flow logs before training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from tasks.config import TrainRecipe
from tasks.datasets.base import TaskSpec


@dataclass(frozen=True)
class PoolCompute:
    """Training work of the models still to train (per the recipe; scoring excluded)."""

    n_models: int
    epochs: int
    records_per_model: float  # mean training records of a model (its members)
    record_passes: float  # n_models × epochs × records_per_model (each record one forward + backward)
    flops_per_record: float | None  # forward + backward, None where it could not be counted
    flops: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=16)
def _flops_per_record(architecture: str, params_json: str, input_shape: tuple[int, ...], n_outputs: int, modality: str) -> float | None:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from models import build_model

    try:
        model = build_model(architecture, input_shape, n_outputs, modality, **json.loads(params_json))
        counter = FlopCounterMode(display=False)
        # fake tensors: shapes only, no arithmetic (the parameters become fake copies inside the mode)
        with FakeTensorMode(allow_non_fake_inputs=True), counter:
            x = torch.zeros((2, *input_shape))  # two records: BatchNorm refuses one in training mode
            model(x).float().sum().backward()
    except Exception:  # an estimate must never stop an audit: an architecture the counter cannot run is "unknown"
        return None
    return counter.get_total_flops() / 2


def training_flops_per_record(architecture: str, arch_params: dict[str, Any], task: TaskSpec) -> float | None:
    """Forward + backward FLOPs of one training record (matmuls and convolutions), or None if not countable."""
    return _flops_per_record(
        architecture, json.dumps(arch_params, sort_keys=True, default=str), tuple(task.input_shape), task.n_outputs, task.modality
    )


def pool_compute(n_models: int, epochs: int, records_per_model: float, flops_per_record: float | None) -> PoolCompute:
    """The training work of ``n_models`` models of ``epochs`` epochs over ``records_per_model`` records each."""
    passes = float(n_models) * epochs * records_per_model
    return PoolCompute(
        n_models,
        epochs,
        float(records_per_model),
        passes,
        flops_per_record,
        None if flops_per_record is None else passes * flops_per_record,
    )


def describe_pool_compute(task: TaskSpec, architecture: str, arch_params: dict[str, Any], recipe: TrainRecipe, members: list[int]) -> str:
    """One line for the log: models × epochs × records, record passes and FLOPs (``members``: each model's record count)."""
    if not members:
        return "nothing to train"
    flops = training_flops_per_record(architecture, arch_params, task) if architecture else None
    c = pool_compute(len(members), recipe.epochs, sum(members) / len(members), flops)
    line = f"training {c.n_models} models × {c.epochs} epochs × {c.records_per_model:,.0f} records = {c.record_passes:,.3g} record passes"
    if c.flops is None:
        return line + " (FLOPs per record not countable for this architecture)"
    return line + f" × {c.flops_per_record / 1e9:.3g} GFLOP (forward + backward) = {c.flops / 1e15:,.3g} PFLOP"

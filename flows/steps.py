"""Thin Prefect task wrappers around the plain functions (design D18). No logic lives here."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.datasets.base import InputChunk
from tasks.training.batched import train_shadow_models
from tasks.training.shadow import ShadowJob, train_shadow_model


@task(name="train-shadow-model", task_run_name="train-model-{job.model_idx}", retries=1, retry_delay_seconds=2)
def train_shadow_model_task(job: ShadowJob) -> dict[str, Any]:
    return train_shadow_model(job)


def _chunk_run_name() -> str:
    from prefect.runtime import task_run

    idx = [job.model_idx for job in task_run.parameters["jobs"]]
    return f"train-models-{idx[0]}-to-{idx[-1]}"


@task(name="train-shadow-models", task_run_name=_chunk_run_name, retries=1, retry_delay_seconds=2)
def train_shadow_models_task(jobs: list[ShadowJob]) -> list[dict[str, Any]]:
    return train_shadow_models(jobs)


@task(name="decode-inputs", task_run_name="decode-inputs", retries=1)
def decode_chunk_task(decode: Any, chunk: Any) -> InputChunk:
    return decode(chunk)


@task(name="score-target-model", task_run_name="score-target-model")
def score_target_model_task(
    model_path: str, snapshot_dir: str, member: Any, target: dict[str, Any], n_views: int, seed: int, raw_dir: str | None = None
) -> Any:
    from tasks.audit.model_loading import score_target_model

    return score_target_model(model_path, snapshot_dir, member, target, n_views, seed, raw_dir)

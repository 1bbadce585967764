"""Thin Prefect task wrappers around the plain functions (D18). No logic lives here."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.datasets.base import InputChunk
from tasks.training import ShadowJob, train_shadow_model


@task(name="train-shadow-model", task_run_name="train-model-{job.model_idx}", retries=1, retry_delay_seconds=2)
def train_shadow_model_task(job: ShadowJob) -> dict[str, Any]:
    return train_shadow_model(job)


@task(name="decode-inputs", task_run_name="decode-inputs", retries=1)
def decode_chunk_task(decode: Any, chunk: Any) -> InputChunk:
    return decode(chunk)

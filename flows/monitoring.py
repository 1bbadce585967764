"""What a running audit shows in the Prefect UI: named steps, run names and tags, training progress with ETA.

* ``step(name)``: a function run as a named Prefect task inside the flow (in the flow process, no result
  persisted, no cache: its inputs are stores and frames), so the run's timeline shows each step.
* ``name_run``: the flow run renamed once its dataset, pool and audit are known, and tagged, so runs are
  found by dataset and audited re-audits are told from skipped ones in the run list.
* ``progress_text``: models done, throughput, ETA and the projected wall time of the pool, for the
  ``shadow-training-progress`` artifact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any


def step(name: str) -> Callable[[Callable[..., Any]], Any]:
    """Decorate/wrap ``fn`` as a Prefect task named ``name`` (called directly: runs inline in the flow)."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    def wrap(fn: Callable[..., Any]) -> Any:
        return task(name=name, task_run_name=name, cache_policy=NO_CACHE, persist_result=False)(fn)

    return wrap


def audit_run_name() -> str:
    """Initial flow run name from the parameters (the pool and audit are added by ``name_run`` once known)."""
    from prefect.runtime import flow_run

    cfg = (flow_run.parameters or {}).get("config") or {}
    pool = cfg.get("pool") or {}
    return f"{cfg.get('dataset', 'audit')} · {pool.get('n_models', '?')} models · starting"


def name_run(name: str, tags: Iterable[str]) -> None:
    """Rename and tag the current flow run (keeps its existing tags); never fails the audit over a label."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=name, tags=sorted({*(flow_run.tags or []), *tags}))


def _duration(seconds: float) -> str:
    seconds = max(round(seconds), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def progress_text(done: int, total: int, elapsed_s: float, failed: int = 0) -> str:
    """One line: models done of total, throughput, ETA, projected wall time of the pool (after the first model)."""
    text = f"{done} of {total} shadow models done"
    if failed:
        text += f" ({failed} failed)"
    if done and elapsed_s > 0:
        rate = done / elapsed_s
        text += f" · {60 * rate:.2f} models/min · elapsed {_duration(elapsed_s)}"
        if done < total:
            text += f" · ETA {_duration((total - done) / rate)} · projected pool wall time {_duration(total / rate)}"
    return text

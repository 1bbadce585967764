"""Process-level settings for Prefect and Dask, applied before Prefect is imported."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def configure_prefect(quiet: bool = True) -> None:
    """Ephemeral Prefect by default, its database under ~/.medaudit (or $MEDAUDIT_HOME), no telemetry.

    A user pointing at a server sets PREFECT_API_URL; we never override what is already set.
    """
    home = Path(os.environ.get("MEDAUDIT_HOME", Path.home() / ".medaudit"))
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    # Prefect does not create its home; without it the ephemeral server cannot open its database
    # and the client only reports a start-up time-out. Owner-only: its database holds the audits' logs
    # and artifacts (subgroup tables).
    from tasks.storage.sealed import make_private, make_private_dir

    prefect_home = make_private_dir(Path(os.environ["PREFECT_HOME"]))
    for item in prefect_home.iterdir():
        if item.is_file():
            make_private(item)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if quiet:
        # INFO reaches the Prefect API (the run's Logs tab) while the console shows warnings only
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        # warnings and errors stay on the console, their tracebacks do not (the CLI prints the error itself)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS", "flows.console.QuietConsoleHandler")
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def check_prefect_api(timeout: float = 5.0) -> None:
    """With PREFECT_API_URL set, make sure a server answers there before a flow starts: one line naming the
    URL and what to do, instead of Prefect's client retries and a long traceback."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return
    import httpx

    from tasks.errors import MedauditError

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as exc:
        raise MedauditError(
            f"PREFECT_API_URL={url}: no Prefect server answers ({type(exc).__name__}); start one with `medaudit server`, "
            "or unset PREFECT_API_URL to run with a private, temporary one"
        ) from exc


def dask_task_runner(address: str | None, n_workers: int, threads_per_worker: int, resources: dict[str, float] | None = None):
    """A DaskTaskRunner on an existing scheduler, or on a LocalCluster bound to 127.0.0.1.

    ``resources``: what each LocalCluster worker offers (e.g. {"GPU": 1}), so tasks that claim them
    can run there; an existing cluster's workers declare their own (`dask worker --resources GPU=1`).
    """
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    kwargs: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
    }
    if resources:
        kwargs["resources"] = resources
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)


@contextlib.contextmanager
def shared_ephemeral_api(local_workers: bool) -> Iterator[None]:
    """Without a Prefect server (PREFECT_API_URL unset), let LocalCluster workers report to the flow's
    ephemeral API instead of each starting its own (a uvicorn process of ~250 MB per worker, all on
    one SQLite file). The flow process's ephemeral server is started first and its URL handed to the
    worker processes through the environment they are spawned with; restored afterwards."""
    from prefect.settings import PREFECT_API_URL

    if not local_workers or PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process-wide instance Prefect's own client uses
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def run_on_dask(flow_fn: Any, cfg: Any, show_progress: bool = True, **params: Any) -> dict[str, Any]:
    """Run ``flow_fn(config_dict, show_progress, **params)`` with a Dask task runner from ``cfg.execution``."""
    ex = cfg.execution
    runner = dask_task_runner(ex.dask_address, ex.n_workers, ex.threads_per_worker, ex.training_resources)
    with shared_ephemeral_api(local_workers=not ex.dask_address):
        return flow_fn.with_options(task_runner=runner)(cfg.model_dump(mode="json"), show_progress=show_progress, **params)

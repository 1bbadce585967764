"""GPU placement through Dask resources: with ``execution.task_resources`` (default {"GPU": 1} for
``device: cuda``) every shadow-model task runs on a worker that offers the resource.

No GPU is needed: the worker *declares* GPU=1 (`dask worker --resources GPU=1`) and the task trains on
``device: auto``, which falls back to the CPU here. What is tested is the placement, the part of the
CUDA path that does not need CUDA; the CUDA kernels themselves are not exercised on this machine.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from tasks.config import ExecutionConfig
from tests.helpers.processes import Processes, free_port, wait_for

pytestmark = pytest.mark.slow


def test_cuda_device_claims_a_gpu_by_default() -> None:
    assert ExecutionConfig(device="cuda").training_resources == {"GPU": 1.0}
    assert ExecutionConfig(device="cpu").training_resources == {}
    assert ExecutionConfig(device="auto", task_resources={"GPU": 0.5}).training_resources == {"GPU": 0.5}


@pytest.mark.heavy
def test_training_tasks_run_only_on_workers_offering_the_resource(helpers: SimpleNamespace, processes: Processes, tmp_path: Path) -> None:
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes.start("scheduler", [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], cwd=tmp_path)
    common = [dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"]
    processes.start("cpu-worker", [*common, "--name", "cpu"], cwd=tmp_path)
    processes.start("gpu-worker", [*common, "--name", "gpu", "--resources", "GPU=1"], cwd=tmp_path)

    def worker_pids() -> dict[str, int] | None:
        try:
            with Client(address, timeout=10) as client:
                client.wait_for_workers(2, timeout=10)
                info = client.scheduler_info()["workers"]
                pids = client.run(os.getpid)
                return {info[a]["name"]: pid for a, pid in pids.items()}
        except (OSError, TimeoutError):
            return None

    pids = wait_for(worker_pids, 180, "2 Dask workers on the scheduler", interval=2, alive=processes.dead)
    cfg = tmp_path / "gpu.json"
    cfg.write_text(json.dumps({"execution": {"device": "auto", "task_resources": {"GPU": 1}}}))
    results = tmp_path / "results"
    argv = ["demo", "--patients", "200", "--models", "6", "--targets", "2", "--epochs", "3", "--config", str(cfg)]
    code, out = helpers.run_cli([*argv, "--results", str(results), "--dask-address", address, "--no-progress", "--json"])
    assert code == 0, out
    assert helpers.json_tail(out)["headline"]["trained"] == 6
    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        ran_on = {int(w.rsplit(":", 1)[1]) for (w,) in con.execute("SELECT worker FROM models").fetchall()}
    assert ran_on == {pids["gpu"]}, f"tasks ran on {ran_on}; GPU worker {pids['gpu']}, CPU worker {pids['cpu']}"

"""Scale-out: the audit's shadow models run on an external Dask cluster (`dask scheduler` + 2 `dask worker`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from tests.helpers.processes import Processes, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


def test_demo_on_an_external_dask_cluster(helpers: SimpleNamespace, processes: Processes, tmp_path: Path) -> None:
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes.start("scheduler", [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], cwd=tmp_path)
    for i in (1, 2):
        processes.start(
            f"worker{i}",
            [dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"],
            cwd=tmp_path,
        )

    def worker_pids() -> dict[str, int] | None:
        try:
            with Client(address, timeout=10) as client:
                client.wait_for_workers(2, timeout=10)
                return client.run(os.getpid)
        except (OSError, TimeoutError):
            return None

    pids = wait_for(worker_pids, 180, "2 Dask workers on the scheduler", interval=2, alive=processes.dead)
    assert len(set(pids.values())) == 2

    results = tmp_path / "results"
    argv = ["demo", "--patients", "300", "--models", "6", "--targets", "2", "--epochs", "5"]
    code, out = helpers.run_cli([*argv, "--results", str(results), "--dask-address", address, "--no-progress", "--json"])
    assert code == 0, out
    res = helpers.json_tail(out)
    assert res["headline"]["trained"] == 6 and res["headline"]["n_models"] == 6

    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        ran_on = [w for (w,) in con.execute("SELECT worker FROM models").fetchall()]
    ran_pids = {int(w.rsplit(":", 1)[1]) for w in ran_on}
    assert os.getpid() not in ran_pids
    assert ran_pids <= set(pids.values()), (ran_on, pids)
    assert len(ran_pids) == 2, f"both external workers trained models: {ran_on}"

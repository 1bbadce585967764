"""Faults: a killed writer, a killed flow, an unusable results folder, a busy database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from flows.cli import main
from tasks.storage.store import AuditStore
from tests.helpers.processes import Processes, wait_for

ROOT = Path(__file__).resolve().parents[2]

_WRITER = """
import sys, time
import numpy as np, pyarrow as pa
from tasks.storage.store import AuditStore
from tests.helpers.processes import Processes, wait_for
store = AuditStore(sys.argv[1])
n = 200_000
with store.transaction() as con:
    con.register("_s", pa.table({"pool_key": ["p"] * n, "model_idx": np.full(n, 7, np.int32),
        "record_idx": np.arange(n), "view": np.zeros(n, np.int8), "score": np.ones(n), "prob": np.ones(n)}))
    con.execute("INSERT INTO scores SELECT * FROM _s")
    con.execute("INSERT INTO pool_models (pool_key, model_idx, status) VALUES ('p', 7, 'complete')")
    print("inserted", flush=True)
    time.sleep(120)
"""


def test_writer_killed_mid_transaction_leaves_no_partial_model(tmp_path: Path, processes: Processes) -> None:
    db = tmp_path / "medaudit.duckdb"
    AuditStore(db).close()
    processes.start("writer", [sys.executable, "-c", _WRITER, str(db)], cwd=ROOT)
    wait_for(lambda: processes.out("writer").strip() == "inserted", 120, "the writer's insert", interval=0.2, alive=processes.dead)
    processes.kill("writer")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM scores").fetchall()[0][0] == 0
        assert con.sql("SELECT count(*) FROM pool_models").fetchall()[0][0] == 0


def test_unusable_results_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    from tasks.synthetic.mimic_iv_ed import write_ed_cohort

    write_ed_cohort(tmp_path / "raw", 60, 0)
    assert main(["ingest", "mimic-iv-ed", str(tmp_path / "raw"), "--results", str(blocker / "results")]) == 2
    err = capsys.readouterr().err
    assert "not-a-folder" in err and "Traceback" not in err


def test_second_writer_waits_for_the_first(tmp_path: Path, processes: Processes) -> None:
    db = tmp_path / "medaudit.duckdb"
    first = AuditStore(db)
    code = (
        "import time; from tasks.storage.store import AuditStore; t = time.time(); "
        f"AuditStore({str(db)!r}, wait_seconds=60).close(); print(time.time() - t)"
    )
    waiter = processes.start("waiter", [sys.executable, "-c", code], cwd=ROOT)
    # it says that it waits (its start-up alone can take seconds on a busy machine), then waits 2 s more
    wait_for(lambda: "waiting" in processes.err("waiter"), 120, "the second writer to wait", interval=0.2, alive=processes.dead)
    time.sleep(2)
    assert waiter.poll() is None  # still waiting
    first.close()
    assert processes.wait("waiter", 60) == 0, processes.err("waiter")
    assert float(processes.out("waiter")) >= 1.0  # it waited for the first writer (about 2 s)


@pytest.mark.slow
@pytest.mark.heavy
def test_killed_flow_resumes_and_trains_only_the_missing_models(tmp_path: Path, processes: Processes) -> None:
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "flows.cli", "demo", "--patients", "400", "--models", "16", "--targets", "4", "--results", str(results)]
    processes.start("demo", cmd, cwd=ROOT, env=env)

    def a_few_stored() -> bool:  # the `shadow models` progress bar shows 4 to 15 of 16 done
        bar = processes.err("demo").partition("shadow models:")[2]
        return any(f" {k}/16 " in bar for k in range(4, 16))

    wait_for(a_few_stored, 240, "a few stored models", interval=0.2, alive=processes.dead)
    processes.kill("demo")
    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        stored_before = con.sql("SELECT count(*) FROM pool_models").fetchall()[0][0]
    assert 0 < stored_before < 16
    rerun = subprocess.run([*cmd, "--json", "--no-progress"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(rerun.stdout[rerun.stdout.index("{") :])
    trained = result["headline"]["trained"] + result["headline"]["recovered"]
    assert trained == 16 - stored_before
    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        rows = con.sql("SELECT model_idx, count(*) AS n FROM pool_models GROUP BY ALL").fetchall()
        assert len(rows) == 16 and all(n == 1 for _, n in rows)
        scores = con.sql("SELECT model_idx, count(*) FROM scores GROUP BY ALL").fetchall()
        assert len({n for _, n in scores}) == 1  # every model stored whole, none twice

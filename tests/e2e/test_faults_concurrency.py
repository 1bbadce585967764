"""Faults and concurrency of whole `medaudit demo` runs: a Dask worker killed mid-training, a results
folder that fills up mid-audit, two audits of the same pool at once, two audits of different datasets at once.

Every run is a real CLI subprocess (own process group, private MEDAUDIT_HOME and secret under tmp_path);
the pool is then checked read-only in DuckDB: every model stored once and whole, nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.helpers.processes import Processes, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))
ED_DEMO = ["demo", "--patients", "300", "--models", "12", "--targets", "2"]


def _env(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: a private MEDAUDIT_HOME (Prefect's database) and patient-key secret."""
    home = tmp_path / "home"
    return {
        **os.environ,
        "MEDAUDIT_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "MEDAUDIT_SECRET_FILE": str(tmp_path / "secret" / "patient_key.secret"),
        "PYTHONUNBUFFERED": "1",
    }


def _models_done(stderr: str, n_models: int) -> int:
    """Models the flow has stored so far, from its `shadow models` progress bar."""
    done = re.findall(rf"shadow models:[^\r\n]*?\b(\d+)/{n_models}\b", stderr)
    return max(map(int, done), default=-1)


def _result(stdout: str) -> dict[str, Any]:
    """The JSON document `--json` printed last (lines such as 'writing a synthetic cohort' may precede it)."""
    return json.loads(stdout[stdout.index("\n{") + 1 :] if not stdout.startswith("{") else stdout)


def _assert_pool_whole(db: Path, pool_key: str, n_models: int) -> dict[str, int]:
    """Every model 0..n_models-1 stored exactly once and whole: one pool_models row, one logits row per record,
    one score per record and view; no stray rows. Returns {worker: models it trained}."""
    with duckdb.connect(str(db), read_only=True) as con:
        n_records, views = con.execute(
            "SELECT count(*), any_value(p.eval_views) FROM pools p JOIN records r ON r.dataset_version = p.dataset_version "
            "WHERE p.pool_key = ?",
            [pool_key],
        ).fetchall()[0]
        models = con.execute("SELECT model_idx, count(*) FROM pool_models WHERE pool_key = ? GROUP BY 1 ORDER BY 1", [pool_key]).fetchall()
        assert models == [(m, 1) for m in range(n_models)], models
        assert con.execute("SELECT DISTINCT status FROM pool_models WHERE pool_key = ?", [pool_key]).fetchall() == [("complete",)]
        for table, per_model in (("scores", n_records * views), ("logits", n_records)):
            rows = con.execute(
                f"SELECT model_idx, count(*), count(DISTINCT record_idx) FROM {table} WHERE pool_key = ? GROUP BY 1 ORDER BY 1", [pool_key]
            ).fetchall()
            assert rows == [(m, per_model, n_records) for m in range(n_models)], (table, rows[:5], per_model)
        return dict(con.execute("SELECT worker, count(*) FROM pool_models WHERE pool_key = ? GROUP BY 1", [pool_key]).fetchall())


def _demo_cmd(argv: list[str], results: Path) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *argv, "--results", str(results)]


# ---------------------------------------------------------------- 1. a Dask worker dies mid-training


@pytest.mark.slow
@pytest.mark.heavy
def test_killed_dask_worker_mid_training_loses_no_model(tmp_path: Path, processes: Processes) -> None:
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    processes.start("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"])
    worker_args = ["--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"]
    for name in ("w1", "w2"):
        processes.start(name, [DASK, "worker", address, *worker_args, "--name", name])

    def dead() -> str | None:
        return processes.dead("scheduler", "w1", "w2")

    results = tmp_path / "results"
    n_models = 12
    argv = [*ED_DEMO, "--epochs", "5", "--dask-address", address, "--json"]
    with Client(address, timeout=60) as client:
        wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 180, "2 Dask workers", interval=0.3, alive=dead)
        pids = client.run(os.getpid)  # worker address -> pid of the worker process (a child of the nanny we started)
        started = time.monotonic()
        demo = processes.start("demo", _demo_cmd(argv, results), env=_env(tmp_path))

        def demo_dead() -> str | None:
            return None if demo.poll() is None else f"demo exited with {demo.returncode}:\n{processes.err('demo')[-3000:]}"

        def busy_worker() -> str | None:
            """A worker in the middle of a training task, once at least one model is stored."""
            if _models_done(processes.err("demo"), n_models) < 1:
                return None
            busy = [w for w, keys in client.processing().items() if any("train" in str(k) for k in keys)]
            return busy[0] if busy else None

        victim = wait_for(busy_worker, 300, "a stored model and a worker training the next", interval=0.3, alive=demo_dead)
        victim_task = [str(k) for k in client.processing()[victim]]
        victim_name = next(n for n in ("w1", "w2") if os.getpgid(pids[victim]) == processes.procs[n].pid)
        done_at_kill = _models_done(processes.err("demo"), n_models)
        killed_after = time.monotonic() - started
        processes.kill(victim_name)  # SIGKILL to the nanny and its worker process
        assert done_at_kill < n_models
        code = processes.wait("demo", 600)
        seconds = time.monotonic() - started
    assert code == 0, processes.err("demo")[-5000:]
    res = _result(processes.out("demo"))
    assert res["headline"]["n_models"] == n_models and res["headline"]["trained"] == n_models
    by_worker = _assert_pool_whole(results / "medaudit.duckdb", res["pool_key"], n_models)
    by_pid = {int(w.rsplit(":", 1)[1]): n for w, n in by_worker.items()}
    survivor = next(p for a, p in pids.items() if a != victim)
    assert set(by_pid) <= set(pids.values()), (by_worker, pids)
    # the survivor trained the lost task and the rest; the victim may have finished one more model
    # between the progress line read above and the kill (it runs one task at a time)
    assert by_pid.get(survivor, 0) >= n_models - done_at_kill - 1
    print(
        f"killed {victim_name} (running {victim_task}) after {killed_after:.0f} s with {done_at_kill}/{n_models} models stored; "
        f"models by worker pid {by_pid} (survivor {survivor}); demo took {seconds:.0f} s"
    )


# ---------------------------------------------------------------- 2. the results folder fills up mid-audit


class _FullDisk:
    """Makes the results folder run out of space while a demo runs, then gives the space back.

    ``tmpfs``: the results folder is a small tmpfs (needs root and mount); ``fill`` writes a file until
    the file system is full (ENOSPC). ``rlimit`` (where mounting is not permitted): ``fill`` sets
    RLIMIT_FSIZE to 1 byte on the running flow process and its Dask workers (prlimit), so every write
    of theirs to a regular file past its first byte fails with EFBIG (Python ignores SIGXFSZ). The
    Prefect server (its database lies outside the results folder) is left alone. ``free`` undoes it
    (for rlimit the limits die with the processes; the rerun has none).
    """

    def __init__(self, tmp_path: Path, method: str):
        self.method = method
        self.root = tmp_path / "disk"
        self.root.mkdir()
        self.filler = self.root / "filler"

    @property
    def error(self) -> str:
        """The OS error the CLI must name."""
        return os.strerror(errno.ENOSPC if self.method == "tmpfs" else errno.EFBIG)

    def mount(self) -> bool:
        cmd = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(self.root)]
        return subprocess.run(cmd, capture_output=True).returncode == 0

    def fill(self, pid: int) -> None:
        """Fill the disk (tmpfs), or limit process ``pid`` and its children (rlimit)."""
        if self.method == "rlimit":
            import psutil

            flow = psutil.Process(pid)
            for p in [flow, *flow.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    if "uvicorn" not in " ".join(p.cmdline()):
                        resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (1, 1))
            return
        with open(self.filler, "wb", buffering=0) as f:
            for size in (1 << 20, 4096, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        assert os.statvfs(self.root).f_bavail == 0

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.method == "tmpfs" and subprocess.run(["umount", str(self.root)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[_FullDisk]:
    forced = os.environ.get("MEDAUDIT_TEST_FULL_DISK")  # "rlimit" exercises the fallback where tmpfs works too
    disk = _FullDisk(tmp_path, forced or "tmpfs")
    if disk.method == "tmpfs" and not disk.mount():
        disk.method = "rlimit"
    if disk.method == "rlimit" and not hasattr(resource, "prlimit"):
        pytest.skip("neither a tmpfs mount (needs root) nor prlimit(RLIMIT_FSIZE) (Linux) is available to fill the disk")
    try:
        yield disk
    finally:
        disk.unmount()


_FULL_WRITER = """
import sys
import numpy as np, pyarrow as pa
from tasks.errors import MedauditError
from tasks.storage.store import AuditStore
store = AuditStore(sys.argv[1])
print("open", flush=True)
sys.stdin.readline()  # the test fills the disk meanwhile
n = int(sys.argv[2])
try:
    with store.transaction() as con:
        con.register("_s", pa.table({"pool_key": ["p"] * n, "model_idx": np.full(n, 7, np.int32),
            "record_idx": np.arange(n), "view": np.zeros(n, np.int8), "score": np.random.rand(n), "prob": np.random.rand(n)}))
        con.execute("INSERT INTO scores SELECT * FROM _s")
        con.execute("INSERT INTO pool_models (pool_key, model_idx, status) VALUES ('p', 7, 'complete')")
except MedauditError as exc:
    print(exc, flush=True)
    sys.exit(2)
"""


@pytest.mark.parametrize("n_scores", [200_000, 1_000], ids=["fails-at-insert", "fails-at-commit"])
def test_database_write_on_a_full_disk_is_a_clear_error_and_stores_nothing(tmp_path: Path, full_disk: _FullDisk, n_scores: int) -> None:
    """The flow's single writer: a transaction the file system refuses names the file and the OS error, and
    leaves nothing behind once the space is back. DuckDB writes a big insert (200,000 scores) to the database
    file as it goes, a small one only to the WAL at the COMMIT."""
    db = full_disk.root / "results" / "medaudit.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-c", _FULL_WRITER, str(db), str(n_scores)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout.readline().strip() == "open", proc.stderr.read()
        full_disk.fill(proc.pid)
        out, err = proc.communicate("go\n", timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, (out, err)
    assert str(db) in out and full_disk.error in out, out
    assert "Traceback" not in err, err
    print(f"{full_disk.method}: {out.strip()}")
    full_disk.free()
    from tasks.storage.store import AuditStore

    with AuditStore(db) as store:  # reopens as the writer (replaying what the WAL holds)
        assert store.query("SELECT count(*) AS n FROM scores")["n"][0] == 0
        assert store.query("SELECT count(*) AS n FROM pool_models")["n"][0] == 0


@pytest.mark.slow
@pytest.mark.heavy
def test_full_results_disk_mid_audit_is_a_clear_error_and_a_rerun_completes(
    tmp_path: Path, processes: Processes, full_disk: _FullDisk
) -> None:
    results = full_disk.root / "results"
    n_models = 12
    cmd = _demo_cmd([*ED_DEMO, "--epochs", "5", "--workers", "1"], results)
    started = time.monotonic()
    demo = processes.start("demo", cmd, env=_env(tmp_path))

    def dead() -> str | None:
        return None if demo.poll() is None else f"demo exited with {demo.returncode}:\n{processes.err('demo')[-3000:]}"

    wait_for(lambda: _models_done(processes.err("demo"), n_models) >= 2, 600, "2 stored models", interval=0.3, alive=dead)
    full_disk.fill(demo.pid)
    filled_after = time.monotonic() - started
    done_at_fill = _models_done(processes.err("demo"), n_models)
    code = processes.wait("demo", 600)
    err = processes.err("demo")
    assert code == 2, err[-5000:]
    message = [line for line in err.splitlines() if line.startswith("medaudit: error:")]
    assert len(message) == 1, err[-5000:]
    assert full_disk.error in message[0] and str(results) in message[0], message
    assert "Traceback" not in err, err[-5000:]
    assert err.splitlines()[-1] == message[0], err[-3000:]  # the last word (no 'nanobind: leaked' report after it)

    full_disk.free()
    db = results / "medaudit.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:  # what the failed run left is consistent
        stored = dict(con.execute("SELECT model_idx, count(*) FROM pool_models GROUP BY 1").fetchall())
        scored = dict(con.execute("SELECT model_idx, count(DISTINCT record_idx) FROM scores GROUP BY 1").fetchall())
        n_records = con.execute("SELECT count(*) FROM records").fetchall()[0][0]
    assert set(stored.values()) <= {1} and scored == dict.fromkeys(stored, n_records), (stored, scored)
    assert 2 <= len(stored) < n_models
    rerun = subprocess.run(
        [*cmd, "--no-progress", "--json"], capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path), timeout=900, start_new_session=True
    )
    assert rerun.returncode == 0, rerun.stderr[-5000:]
    res = _result(rerun.stdout)
    assert res["headline"]["trained"] + res["headline"]["recovered"] == n_models - len(stored)
    _assert_pool_whole(db, res["pool_key"], n_models)
    print(
        f"{full_disk.method}: disk full after {filled_after:.0f} s with {done_at_fill}/{n_models} models stored, "
        f"{len(stored)} in the database after the failure; error: {message[0]!r}; rerun trained "
        f"{res['headline']['trained']}, recovered {res['headline']['recovered']} in {time.monotonic() - started:.0f} s in all"
    )


# ---------------------------------------------------------------- 3. and 4. two audits at once, one results folder


def _start_together(processes: Processes, runs: dict[str, list[str]], env: dict[str, str]) -> tuple[str, str]:
    """Start the two demo runs at once and make sure they meet at the database: whoever opens it first is
    paused (SIGSTOP to its process group: flow, Dask workers, Prefect server) in its training until the
    other one reaches the database and logs that it waits for it. Returns (first, second)."""
    for name, cmd in runs.items():
        processes.start(name, cmd, env=env)

    first = wait_for(
        lambda: next((n for n in runs if "shadow models" in processes.err(n)), None), 600, "training", interval=0.3, alive=processes.dead
    )
    second = next(n for n in runs if n != first)
    processes.send(first, signal.SIGSTOP)
    try:
        wait_for(lambda: "waiting" in processes.err(second), 600, f"{second} to wait for the database", interval=0.3, alive=processes.dead)
    finally:
        processes.send(first, signal.SIGCONT)
    for name in runs:
        assert processes.wait(name, 900) == 0, f"{name}:\n{processes.err(name)[-5000:]}"
    return first, second


@pytest.mark.slow
@pytest.mark.heavy
def test_two_audits_of_the_same_pool_at_once_store_each_model_once(tmp_path: Path, processes: Processes) -> None:
    results = tmp_path / "results"
    n_models = 8
    argv = ["demo", "--patients", "300", "--models", str(n_models), "--targets", "2", "--epochs", "3", "--workers", "1", "--json"]
    argv.append("--force")  # two audits, even when the second only reaches the database after the first finished
    started = time.monotonic()
    # the same command, results folder and MEDAUDIT_HOME twice
    first, second = _start_together(processes, {"a": _demo_cmd(argv, results), "b": _demo_cmd(argv, results)}, _env(tmp_path))
    seconds = time.monotonic() - started
    res = {name: _result(processes.out(name)) for name in ("a", "b")}
    assert res["a"]["pool_key"] == res["b"]["pool_key"] and res["a"]["audit_id"] != res["b"]["audit_id"]
    trained = {name: r["headline"]["trained"] + r["headline"]["recovered"] for name, r in res.items()}
    assert trained == {first: n_models, second: 0}  # the second reused the first's models: none trained or stored twice
    _assert_pool_whole(results / "medaudit.duckdb", res["a"]["pool_key"], n_models)
    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        audits = con.execute("SELECT audit_id, finished_at IS NOT NULL FROM audits").fetchall()
        assert sorted(audits) == sorted((r["audit_id"], True) for r in res.values())
        assert con.execute("SELECT count(*) FROM datasets").fetchall() == [(1,)]
    print(f"models trained by {first}/{second}: {trained[first]}/{trained[second]}; both done in {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.heavy
def test_two_audits_of_different_datasets_at_once_both_complete(tmp_path: Path, processes: Processes) -> None:
    results = tmp_path / "results"
    n_models = 6
    opts = {
        "mimic-iv-ed": ["--patients", "300", "--epochs", "3"],
        "fairvision": ["--patients", "100", "--epochs", "2"],  # the cheapest image demo: 100 one-image patients at 32 px
    }
    runs = {
        name: _demo_cmd(["demo", "--dataset", name, *o, "--models", str(n_models), "--targets", "2", "--workers", "1", "--json"], results)
        for name, o in opts.items()
    }
    started = time.monotonic()
    first, second = _start_together(processes, runs, _env(tmp_path))
    seconds = time.monotonic() - started
    res = {name: _result(processes.out(name)) for name in runs}
    assert res["mimic-iv-ed"]["pool_key"] != res["fairvision"]["pool_key"]
    for name, r in res.items():
        assert r["headline"]["trained"] == n_models, (name, r["headline"])
        _assert_pool_whole(results / "medaudit.duckdb", r["pool_key"], n_models)
    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        pools = con.execute("SELECT dataset, pool_key FROM pools ORDER BY 1").fetchall()
        assert pools == sorted((name, r["pool_key"]) for name, r in res.items())
        finished = con.execute("SELECT dataset, count(*) FROM audits WHERE finished_at IS NOT NULL GROUP BY 1 ORDER BY 1").fetchall()
        assert finished == [("fairvision", 1), ("mimic-iv-ed", 1)]
        assert con.execute("SELECT count(DISTINCT dataset) FROM datasets").fetchall() == [(2,)]
    print(f"{first} trained first, {second} waited for the database; both audited in {seconds:.0f} s")


# ---------------------------------------------------------------- the two races of concurrent first runs, made certain


def test_concurrent_ingests_of_the_same_data_keep_one_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ingests of the same raw data both find no snapshot yet; the other one renames its copy in first."""
    from tasks.datasets import get_dataset
    from tasks.ingest.pseudonym import load_or_create_secret
    from tasks.ingest.snapshot import build_snapshot
    from tasks.synthetic.mimic_iv_ed import write_ed_cohort

    write_ed_cohort(tmp_path / "raw", 60, 0)
    real_rename = Path.rename

    def other_ingest_first(self: Path, target: Path) -> Path:
        if self.name.startswith(".incoming-"):
            shutil.copytree(self, target)  # the other ingest's identical snapshot appears first
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", other_ingest_first)
    snap = build_snapshot(get_dataset("mimic-iv-ed"), tmp_path / "raw", tmp_path / "results", load_or_create_secret())
    monkeypatch.undo()
    assert [p.name for p in snap.path.parent.iterdir()] == [snap.version]  # no .incoming- folder left
    assert len(snap.records) == snap.n_accepted > 0


def test_two_demos_writing_the_same_cohort_at_once_both_use_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two first `medaudit demo` runs write the same synthetic cohort; the other one finishes first."""
    import flows.audit
    import tasks.synthetic
    from flows.cli import main
    from tasks.synthetic.mimic_iv_ed import write_ed_cohort

    raw_dir = tmp_path / "results" / "demo_data" / "mimic-iv-ed" / "n60_seed0"

    def racing_writer(path: Path, n: int, seed: int) -> Path:
        write_ed_cohort(raw_dir, n, seed)  # the other demo, done first
        return write_ed_cohort(path, n, seed)

    class Audited(Exception):
        pass

    def fake_audit(cfg: Any, show_progress: bool = True) -> dict[str, Any]:
        raise Audited(cfg.raw_dir)

    monkeypatch.setattr(tasks.synthetic, "get_synthetic_writer", lambda dataset: racing_writer)
    monkeypatch.setattr(flows.audit, "run_audit", fake_audit)
    with pytest.raises(Audited) as audited:
        main(["demo", "--patients", "60", "--models", "4", "--targets", "0", "--results", str(tmp_path / "results"), "--no-progress"])
    assert Path(audited.value.args[0]) == raw_dir
    assert [p.name for p in raw_dir.parent.iterdir()] == [raw_dir.name]  # no .partial folder left
    reference = tmp_path / "reference"
    write_ed_cohort(reference, 60, 0)
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(p.name for p in reference.iterdir())
    assert all((raw_dir / p.name).read_bytes() == p.read_bytes() for p in reference.iterdir())

"""Session-wide isolation (a private patient-key secret, Prefect home, no telemetry) and the fixtures shared by
the operations tests: one small real audit, free ports, subprocess bookkeeping."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

_SESSION = Path(tempfile.mkdtemp(prefix="medaudit-tests-"))
os.environ["MEDAUDIT_SECRET_FILE"] = str(_SESSION / "secret" / "patient_key.secret")
os.environ["MEDAUDIT_HOME"] = str(_SESSION / "home")
os.environ["PREFECT_HOME"] = str(_SESSION / "home" / "prefect")

import pytest  # noqa: E402

from flows.cli import main  # noqa: E402
from flows.runtime import configure_prefect  # noqa: E402

configure_prefect(quiet=True)


# The longest end-to-end runs (a Prefect server and scheduler, a browser, an external Dask cluster,
# one audit per dataset layout, the DP and capacity trends, benchmark smoke runs) are `heavy`: the
# default run (README, CI) skips them to stay well under 20 minutes on 2 cores; `pytest -m heavy`
# runs them. The spine's end-to-end demo, the fault tests and every statistics test stay in the default run.
HEAVY = (
    "tests/flows/test_gate.py::test_gate_on_a_real_audit",
    "tests/flows/test_reaudit.py::test_reaudits_train_only_what_changed",
    "tests/flows/test_scale_out.py",
    "tests/flows/test_scheduled_reaudit.py",
    "tests/e2e/test_demo_datasets.py",
    "tests/training/test_dp_and_capacity.py::test_risk_falls_as_epsilon_falls",
    "tests/training/test_dp_and_capacity.py::test_larger_architecture_exposes_more_patients",
    "tests/flows/test_scaling.py::test_scaling_trains_one_pool_per_architecture",
    "tests/flows/test_dp_sweep.py::test_dp_sweep_end_to_end",
    "tests/bench/",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(HEAVY):
            item.add_marker(pytest.mark.heavy)


DEMO_ARGS = ["demo", "--patients", "400", "--models", "8", "--targets", "2", "--no-progress", "--json"]


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``medaudit argv`` in this process; (exit code, stdout)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


def json_tail(out: str) -> dict[str, Any]:
    """The JSON document a --json command printed last (logs may precede it)."""
    return json.loads(out[out.index("\n{") + 1 :] if not out.startswith("{") else out)


@pytest.fixture(scope="session")
def demo_audit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real audit (about a minute): 400 synthetic ED patients, 8 shadow models, 2 held-out targets."""
    results = tmp_path_factory.mktemp("ops-demo") / "results"
    code, out = run_cli([*DEMO_ARGS, "--results", str(results)])
    assert code == 0, out
    res = json_tail(out)
    return {"results": results, "audit_id": res["audit_id"], "pool_key": res["pool_key"], "result": res}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Subprocesses started by a test, each in its own process group; ``stop_all`` ends them and their children."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self, name: str) -> None:
        for n, proc in self.procs:
            if n == name:
                _stop_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _stop_group(proc, signal.SIGKILL)
                    proc.wait(timeout=10)
                _stop_group(proc, signal.SIGKILL)

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            _stop_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _stop_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        for _name, proc in self.procs:  # children left in a group (dask nannies, flow-run processes)
            _stop_group(proc, signal.SIGKILL)


def _stop_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the group this test created with start_new_session (pgid == pid)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0, alive: Callable[[], str | None] | None = None
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s or when ``alive`` reports a death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if alive is not None and (dead := alive()):
            pytest.fail(f"while waiting for {what}: {dead}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """The functions above for the test modules (pytest's importlib mode does not let them import this file)."""
    return SimpleNamespace(
        run_cli=run_cli, json_tail=json_tail, free_port=free_port, wait_for=wait_for, Processes=Processes, demo_args=DEMO_ARGS
    )

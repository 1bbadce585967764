"""Session-wide isolation (a private patient-key secret, Prefect home, no telemetry) and the fixtures shared by
the operations tests: one small real audit, the CLI run in this process, the test's subprocesses."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
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
from tests.helpers.processes import Processes  # noqa: E402

configure_prefect(quiet=True)


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


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """The test's subprocesses (tests/helpers/processes.py); every process group it started is ended afterwards."""
    with Processes(tmp_path) as procs:
        yield procs


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """The CLI helpers above for the test modules (pytest's importlib mode does not let them import this file)."""
    return SimpleNamespace(run_cli=run_cli, json_tail=json_tail, demo_args=DEMO_ARGS)

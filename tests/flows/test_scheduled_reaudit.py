"""A scheduled re-audit on a real Prefect server: `medaudit server` + `medaudit serve --interval 5`.

The server and the served deployment run as subprocesses on 127.0.0.1 (free ports, Prefect home in a
temporary folder); every wait is bounded and every process is ended in a finally. If Chromium is
installed, the Prefect UI is opened headless: screenshots of the audit's flow run and of its
subgroup-risk table artifact, and the rendered DOM must hold the table's groups.
Set MEDAUDIT_SCREENSHOTS=1 to copy the screenshots to docs/screenshots/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import yaml

from tests.helpers.processes import Processes, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "medaudit-reaudit/ops-test"


@contextlib.contextmanager
def prefect_client(api: str) -> Iterator[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        yield client


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def served(demo_audit: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Server + served deployment; yields once the first scheduled run completed (the serve process is then stopped)."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterParentFlowRunId,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    root = tmp_path_factory.mktemp("served")
    # the demo's raw data and pool, smaller (6 models of 5 epochs), into a fresh results folder
    with duckdb.connect(str(demo_audit["results"] / "medaudit.duckdb"), read_only=True) as con:
        config = con.execute("SELECT config FROM audits WHERE audit_id = ?", [demo_audit["audit_id"]]).fetchall()[0][0]
    config = json.loads(config) if isinstance(config, str) else config
    config["results_dir"] = str(root / "results")
    config["pool"].update({"n_models": 6, "n_targets": 2})
    config["pool"]["recipe"]["epochs"] = 5
    cfg_file = root / "audit.yaml"
    cfg_file.write_text(yaml.safe_dump(config))

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    server_env = {**env, "PREFECT_HOME": str(root / "server-home"), "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}
    serve_env = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(root / "serve-home"), "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    with Processes(root) as procs:
        procs.start("server", [sys.executable, "-m", "flows.cli", "server", "--port", str(port)], env=server_env, cwd=root)
        wait_for(lambda: _healthy(api), 180, "the Prefect server", interval=2, alive=procs.dead)
        assert f"UI:   http://127.0.0.1:{port}" in procs.log("server")
        procs.start(
            "serve",
            [sys.executable, "-m", "flows.cli", "serve", "--config", str(cfg_file), "--interval", "5", "--name", "ops-test"],
            env=serve_env,
            cwd=root,
        )

        with prefect_client(api) as client:

            def deployment() -> Any:
                with contextlib.suppress(ObjectNotFound):
                    return client.read_deployment_by_name(DEPLOYMENT)
                return None

            dep = wait_for(deployment, 120, "the served deployment", interval=2, alive=procs.dead)

            def first_completed() -> Any:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[dep.id])),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                    limit=50,
                )
                bad = [r for r in runs if r.state_type in (StateType.FAILED, StateType.CRASHED)]
                if bad:
                    pytest.fail(f"scheduled run {bad[0].name} ended {bad[0].state_type}: {bad[0].state}\n{procs.log('serve')}")
                done = [r for r in runs if r.state_type == StateType.COMPLETED]
                return done[0] if done else None

            run = wait_for(first_completed, 600, "a scheduled re-audit run to complete", interval=3, alive=procs.dead)
            procs.stop("serve")  # no more scheduled runs while the tests look at this one
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id, *[c.id for c in children]]))
            )
            flows = {c.id: client.read_flow(c.flow_id).name for c in children}
        yield {
            "api": api,
            "base": f"http://127.0.0.1:{port}",
            "deployment": dep,
            "run": run,
            "children": children,
            "child_flows": flows,
            "artifacts": {a.key: a for a in artifacts},
            "results": root / "results",
            "serve_log": procs.log("serve", tail=20000),
        }


def test_scheduled_reaudit_completes_and_publishes_artifacts(served: dict[str, Any]) -> None:
    from prefect.client.schemas.objects import StateType

    dep, run = served["deployment"], served["run"]
    assert dep.schedules and dep.schedules[0].schedule.interval == timedelta(seconds=5)
    assert dep.entrypoint == "flows.reaudit.reaudit_flow"
    assert run.state_type == StateType.COMPLETED and run.deployment_id == dep.id
    audits = [c for c in served["children"] if served["child_flows"][c.id] == "medaudit-audit"]
    assert len(audits) == 1 and audits[0].state_type == StateType.COMPLETED, "the re-audit ran the audit flow as a sub-flow"

    artifacts = served["artifacts"]
    assert {"audit-headline", "subgroup-risk", "reaudit-decision", "shadow-training-progress"} <= set(artifacts)
    assert artifacts["audit-headline"].flow_run_id == audits[0].id
    table = (
        json.loads(artifacts["subgroup-risk"].data) if isinstance(artifacts["subgroup-risk"].data, str) else artifacts["subgroup-risk"].data
    )
    assert {"race", "sex"} <= {row["attribute"] for row in table} and "White" in {row["group"] for row in table}
    assert "**audited**" in artifacts["reaudit-decision"].data and "no finished audit" in artifacts["reaudit-decision"].data

    with duckdb.connect(str(served["results"] / "medaudit.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT flow_run_id, n_models FROM audits WHERE finished_at IS NOT NULL").fetchall()
        n_models = con.execute("SELECT count(*) FROM models").fetchall()[0][0]
    assert (str(audits[0].id), 6) in rows and n_models == 6


def _chromium(procs: Processes, name: str, binary: str, profile: Path, *args: str, timeout: float = 120) -> str:
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,2000",
        "--virtual-time-budget=15000",
        *args,
    ]
    procs.start(name, cmd)
    procs.wait(name, timeout)
    procs.kill(name)  # chromium's helpers, left in its process group
    return procs.out(name)


def test_prefect_ui_shows_the_run_and_the_subgroup_table(served: dict[str, Any], processes: Processes, tmp_path: Path) -> None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("no headless browser: install Debian's `chromium` package to check the Prefect UI")
    base, artifacts = served["base"], served["artifacts"]
    audit_run = next(c for c in served["children"] if served["child_flows"][c.id] == "medaudit-audit")
    pages = {
        "flow_run": f"{base}/runs/flow-run/{audit_run.id}",
        "reaudit_run": f"{base}/runs/flow-run/{served['run'].id}",
        "subgroup_artifact": f"{base}/artifacts/artifact/{artifacts['subgroup-risk'].id}",
        "headline_artifact": f"{base}/artifacts/artifact/{artifacts['audit-headline'].id}",
    }
    shots = {}
    for i, (name, url) in enumerate(pages.items()):
        shot = tmp_path / f"{name}.png"
        _chromium(processes, f"shot-{name}", binary, tmp_path / f"profile-{i}", f"--screenshot={shot}", url)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000, name
        shots[name] = shot

    dom = _chromium(processes, "dom", binary, tmp_path / "profile-dom", "--dump-dom", pages["subgroup_artifact"])
    for text in ("subgroup-risk", "White", "Black", "race", "share_above", "median_risk"):
        assert text in dom, text
    dom = _chromium(processes, "dom2", binary, tmp_path / "profile-dom2", "--dump-dom", pages["flow_run"])
    assert audit_run.name in dom and "medaudit-audit" in dom and "Completed" in dom
    dom = _chromium(processes, "dom3", binary, tmp_path / "profile-dom3", "--dump-dom", pages["headline_artifact"])
    assert "Privacy audit" in dom and "aggregate LiRA AUC" in dom

    if os.environ.get("MEDAUDIT_SCREENSHOTS"):
        out = REPO / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        for name, shot in shots.items():
            shutil.copyfile(shot, out / f"{name}.png")

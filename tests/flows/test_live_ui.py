"""Watching a running audit in the Prefect UI, in a real headless browser (heavy).

`medaudit server` and a `medaudit demo` reporting to it run as subprocesses. While the demo is still
training, Chromium (driven over the WebDriver protocol by Debian's `chromedriver`, no Python driver
needed) opens its flow run: the Logs tab shows medaudit's INFO lines and the Task Runs tab the named
tasks, and the API confirms the run had not finished. After it finishes, the subgroup-risk artifact
at a 1,400 px window shows `share_above` without horizontal scrolling. Screenshots go to
docs/screenshots/ when MEDAUDIT_SCREENSHOTS=1.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.processes import Processes, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

REPO = Path(__file__).resolve().parents[2]
WIDTH = 1400


class Browser:
    """A minimal WebDriver client (W3C protocol over HTTP) for a headless Chromium."""

    def __init__(self, driver_url: str, binary: str, profile: Path):
        self.url = driver_url
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    f"--window-size={WIDTH},1000",
                    f"--user-data-dir={profile}",
                    "--no-first-run",
                    "--disable-background-networking",
                ],
            },
        }
        r = httpx.post(f"{self.url}/session", json={"capabilities": {"alwaysMatch": caps}}, timeout=120)
        r.raise_for_status()
        self.session = f"{self.url}/session/{r.json()['value']['sessionId']}"

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        r = httpx.post(self.session + path, json=body, timeout=120)
        r.raise_for_status()
        return r.json()["value"]

    def open(self, url: str) -> None:
        self._post("/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self._post("/execute/sync", {"script": script, "args": list(args)})

    def text(self) -> str:
        return self.js("return document.body ? document.body.innerText : ''")

    def wait_text(self, needles: list[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return text
            time.sleep(2)
        pytest.fail(f"page never showed {needles}; it shows:\n{text[:3000]}")

    def click_text(self, label: str) -> bool:
        return self.js(
            "const want = arguments[0];"
            "for (const el of document.querySelectorAll('button, a, [role=tab], li, span')) {"
            "  if (el.innerText && el.innerText.trim() === want) { el.click(); return true; } }"
            "return false;",
            label,
        )

    def screenshot(self, path: Path) -> Path:
        r = httpx.get(self.session + "/screenshot", timeout=120)
        r.raise_for_status()
        path.write_bytes(base64.b64decode(r.json()["value"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.delete(self.session, timeout=30)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("no headless browser: install Debian's `chromium` and `chromium-driver` packages")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/status", timeout=5).json()["value"]["ready"]
        return False

    with Processes(tmp_path) as procs:
        procs.start("chromedriver", [driver, f"--port={port}"])
        wait_for(ready, 60, "chromedriver", alive=procs.dead)
        b = Browser(url, binary, tmp_path / "profile")
        try:
            yield b
        finally:
            b.close()


def _client(api: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    @contextlib.contextmanager
    def cm() -> Iterator[Any]:
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            yield client

    return cm()


def test_a_running_audit_is_visible_live(browser: Browser, tmp_path: Path) -> None:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.client.schemas.objects import StateType

    port = free_port()
    base, api = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    shots: dict[str, Path] = {}
    with Processes(tmp_path) as procs:
        procs.start(
            "server", [sys.executable, "-m", "flows.cli", "server", "--port", str(port)], env={**env, "PREFECT_HOME": str(tmp_path / "ph")}
        )

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{api}/health", timeout=5).status_code == 200
            return False

        wait_for(healthy, 180, "the Prefect server", interval=2, alive=procs.dead)
        demo = procs.start(
            "demo",
            [
                sys.executable,
                "-m",
                "flows.cli",
                "demo",
                "--patients",
                "400",
                "--models",
                "16",
                "--targets",
                "2",
                "--workers",
                "1",
                "--results",
                str(tmp_path / "results"),
                "--no-progress",
                "--json",
            ],
            env={**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client-home")},
        )

        def dead() -> str | None:
            return f"demo exited early ({demo.returncode}):\n{procs.log('demo')}" if demo.poll() is not None else None

        with _client(api) as client:

            def training_run() -> Any:
                runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["medaudit-audit"])))
                for run in runs:
                    tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))
                    done = [t for t in tasks if t.name.startswith("train-model-") and t.state_type == StateType.COMPLETED]
                    if run.state_type == StateType.RUNNING and done:
                        return run
                return None

            run = wait_for(training_run, 900, "a shadow model of the running audit to finish", interval=3, alive=dead)
            assert run.name.startswith("mimic-iv-ed · pool ") and " · audit " in run.name, run.name
            assert {"medaudit", "dataset:mimic-iv-ed"} <= set(run.tags)

            browser.open(f"{base}/runs/flow-run/{run.id}")
            # the Logs tab polls the API: medaudit's INFO lines appear while the models train, progress with ETA included
            browser.wait_text([run.name.split(" · ")[0], "ingesting mimic-iv-ed", "shadow models done", "models/min", "ETA"], 240)
            shots["live_flow_run_logs"] = browser.screenshot(tmp_path / "live_flow_run_logs.png")
            assert browser.click_text("Task Runs"), "the flow run page has a Task Runs tab"
            browser.wait_text(["train-model-", "decode-inputs"], 120)
            shots["live_flow_run_tasks"] = browser.screenshot(tmp_path / "live_flow_run_tasks.png")
            still = client.read_flow_run(run.id)
            assert still.state_type == StateType.RUNNING, f"the audit finished before the browser looked ({still.state_type})"

            wait_for(lambda: demo.poll() is not None, 1200, "the demo to finish", interval=5)
            assert demo.returncode == 0, procs.log("demo")
            tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))
            names = {t.name.rsplit("-", 1)[0] if t.name.startswith("train-model-") else t.name for t in tasks}
            assert {"decode-inputs", "train-model", "statistics, attacks, subgroups", "store results", "report", "artifacts"} <= names, (
                names
            )
            artifacts = {a.key: a for a in client.read_artifacts(flow_run_filter=FlowRunFilter(id={"any_": [run.id]}))}
        progress = artifacts["shadow-training-progress"]
        assert "16 of 16 shadow models done" in (progress.description or ""), progress.description

        browser.open(f"{base}/artifacts/artifact/{artifacts['subgroup-risk'].id}")
        browser.wait_text(["share_above", "suppressed (n < 10)"], 120)
        where = browser.js(
            "for (const el of document.querySelectorAll('th, td, div, span')) {"
            "  if (el.children.length === 0 && el.innerText && el.innerText.trim() === 'share_above') {"
            "    const r = el.getBoundingClientRect(); return {right: r.right, left: r.left, width: window.innerWidth}; } }"
            "return null;"
        )
        assert where is not None and where["left"] >= 0 and where["right"] <= where["width"], where
        shots["subgroup_artifact"] = browser.screenshot(tmp_path / "subgroup_artifact.png")
    for shot in shots.values():
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("MEDAUDIT_SCREENSHOTS"):
        out = REPO / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        for name, shot in shots.items():
            shutil.copyfile(shot, out / f"{name}.png")

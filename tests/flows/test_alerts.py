"""Alerts on rising risk: limits -> breaches (fast), and on a real Prefect server a re-audit past its limits
emits `medaudit.risk.limit-exceeded`, which the Automation from `medaudit alerts` turns into a webhook POST (heavy)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import duckdb
import httpx
import pytest
import yaml

from flows.alerts import EVENT, breaches
from tasks.config import AlertConfig
from tests.helpers.processes import Processes, free_port, wait_for

HEADLINE = {"share_patients_above_threshold": 0.05, "n_patients_above_threshold": 20, "risk_threshold": 0.9, "lira_auc_mean": 0.56}


def test_breaches_name_each_limit() -> None:
    assert breaches(HEADLINE, None, AlertConfig()) == []
    found = breaches(HEADLINE, {"share_patients_above_threshold": 0.01}, AlertConfig(max_share_above=0.02, max_rise=0.03, max_lira_auc=0.6))
    assert [b["limit"] for b in found] == ["max_share_above", "max_rise"]
    assert found[1]["observed"] == pytest.approx(0.04) and "0.0100 -> 0.0500" in found[1]["detail"]
    # the FDR-controlled count (issue #13) is preferred where the audit has it
    assert breaches(HEADLINE, None, AlertConfig(max_patients_at_risk=10))[0]["detail"] == "patients with risk >= threshold"
    found = breaches({**HEADLINE, "n_patients_at_risk": 4}, None, AlertConfig(max_patients_at_risk=10))
    assert found == []
    # no previous audit: a rise cannot be judged, and does not alert
    assert breaches(HEADLINE, None, AlertConfig(max_rise=0.0)) == []


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Receiver.bodies.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _events(api: str) -> list[dict[str, Any]]:
    r = httpx.post(f"{api}/events/filter", json={"filter": {"event": {"name": [EVENT]}}, "limit": 20}, timeout=10)
    r.raise_for_status()
    return r.json()["events"]


@pytest.mark.slow
@pytest.mark.heavy
def test_a_reaudit_past_its_limits_fires_the_event_and_the_automation(
    demo_audit: dict[str, Any], helpers: SimpleNamespace, processes: Processes, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    shutil.copytree(demo_audit["results"], results)  # the demo's pool, so the forced re-audit trains nothing
    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        config = con.execute("SELECT config FROM audits WHERE audit_id = ?", [demo_audit["audit_id"]]).fetchall()[0][0]
    config = json.loads(config) if isinstance(config, str) else config
    config["results_dir"] = str(results)
    config["alerts"] = {"max_share_above": 0.0, "max_patients_at_risk": 0}
    cfg_file = tmp_path / "audit.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    assert demo_audit["result"]["headline"]["n_patients_above_threshold"] > 0, "the demo must have patients above the threshold"

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    try:
        processes.start(
            "server",
            [sys.executable, "-m", "flows.cli", "server", "--port", str(port), "--no-ui"],
            env={**env, "PREFECT_HOME": str(tmp_path / "ph")},
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"{api}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 180, "the Prefect server", interval=2, alive=processes.dead)
        client_env = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client-home")}

        def cli(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "flows.cli", *argv], env=client_env, capture_output=True, text=True, timeout=timeout, check=False
            )

        made = cli(
            "alerts", "--webhook-url", f"http://127.0.0.1:{receiver.server_address[1]}/hook", "--dataset", "mimic-iv-ed", timeout=120
        )
        assert made.returncode == 0, made.stderr
        assert EVENT in made.stdout

        run = cli("reaudit", "--config", str(cfg_file), "--force", "--no-progress", "--json")
        assert run.returncode == 0, run.stderr[-3000:]
        out = json.loads(run.stdout[run.stdout.index("{") :])
        assert out["ran"] and out["trained"] == 0
        assert {b["limit"] for b in out["alerts"]} == {"max_share_above", "max_patients_at_risk"}
        audit_id = out["audit"]["audit_id"]

        events = wait_for(lambda: _events(api), 60, f"the {EVENT} event on the server", interval=2)
        ev = events[0]
        assert ev["resource"]["prefect.resource.id"] == "medaudit.dataset.mimic-iv-ed"
        assert ev["payload"]["audit_id"] == audit_id and ev["payload"]["previous_audit_id"] == demo_audit["audit_id"]
        assert any(r["prefect.resource.id"].startswith("prefect.flow-run.") for r in ev["related"]), "related to the re-audit's run"

        def notified() -> list[dict[str, Any]]:
            return [b for b in _Receiver.bodies if audit_id in b.get("body", "")]

        note = wait_for(notified, 120, "the Automation's webhook notification", interval=2)[0]
        assert "mimic-iv-ed" in note["subject"] and "medaudit compare" in note["body"]

        # a second run with nothing changed is skipped, fires nothing new, and history lists both runs
        run = cli("reaudit", "--config", str(cfg_file), "--no-progress", "--json")
        assert run.returncode == 0 and not json.loads(run.stdout[run.stdout.index("{") :])["ran"]
        assert len(_events(api)) == 1
        code, hist = helpers.run_cli(["history", "--results", str(results)])
        assert code == 0 and "audited" in hist and "skipped" in hist
    finally:
        receiver.shutdown()

"""LocalCluster workers report to the flow's ephemeral Prefect API instead of starting one each."""

from __future__ import annotations

import os

import httpx
import pytest

from flows.runtime import shared_ephemeral_api


def test_workers_get_the_flow_process_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with shared_ephemeral_api(local_workers=True):
        url = os.environ["PREFECT_API_URL"]  # what spawned worker processes inherit
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        from prefect.server.api.server import SubprocessASGIServer

        assert SubprocessASGIServer().api_url == url  # the instance Prefect's own client uses in this process
    assert "PREFECT_API_URL" not in os.environ


def test_an_explicit_api_or_an_external_cluster_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    with shared_ephemeral_api(local_workers=True):
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    monkeypatch.delenv("PREFECT_API_URL")
    with shared_ephemeral_api(local_workers=False):
        assert "PREFECT_API_URL" not in os.environ

"""What a running audit reports: progress with ETA, and one line when the Prefect API does not answer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flows.monitoring import progress_text
from tests.helpers.processes import free_port


def test_progress_text_has_throughput_eta_and_projected_wall_time() -> None:
    assert progress_text(0, 48, 0.0) == "0 of 48 shadow models done"
    text = progress_text(1, 48, 30.0)  # one model in 30 s: 2 models/min, 47 more take 23.5 min, 48 take 24 min
    assert text == "1 of 48 shadow models done · 2.00 models/min · elapsed 30s · ETA 23m 30s · projected pool wall time 24m 00s"
    assert progress_text(48, 48, 3600.0).endswith("elapsed 1h 00m") and "ETA" not in progress_text(48, 48, 3600.0)
    assert "(2 failed)" in progress_text(10, 48, 60.0, failed=2)


def test_an_unreachable_prefect_api_is_one_line(helpers: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, capsys, tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    monkeypatch.setenv("PREFECT_API_URL", url)
    code, out = helpers.run_cli(["demo", "--patients", "50", "--models", "4", "--results", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and f"PREFECT_API_URL={url}" in err and "medaudit server" in err and "unset PREFECT_API_URL" in err
    assert "Traceback" not in err and not (tmp_path / "demo_data").exists(), "nothing started"

"""A pool too small for the statistics is refused before any training, naming the minimum and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main


def test_four_models_are_refused_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    code = main(["demo", "--patients", "60", "--models", "4", "--targets", "0", "--results", str(results), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "pool.n_models=4 is too small: at least 6 models are needed" in err and "complementary pairs" in err
    assert not (results / "shards").exists() and not (results / "medaudit.duckdb").exists()  # nothing trained or stored

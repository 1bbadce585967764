"""`medaudit serve --demo`: the demo's settings served without a hand-written config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from flows.commands.ops import _demo_config
from tasks.synthetic.demo_pools import demo_pool


def test_serve_demo_builds_the_demos_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(demo="mimic-iv-ed", patients=200, models=8, results=Path("results"))
    cfg = _demo_config(args)
    assert cfg.raw_dir == tmp_path / "results" / "demo_data" / "mimic-iv-ed" / "n200_seed0" and cfg.raw_dir.exists()
    assert cfg.results_dir == tmp_path / "results" and cfg.pool.n_models == 8
    assert cfg.pool.architecture.name == demo_pool("mimic-iv-ed")["architecture"]["name"]


def test_serve_demo_options_need_demo(tmp_path: Path, helpers, capsys) -> None:
    cfg = tmp_path / "a.yaml"
    cfg.write_text("dataset: mimic-iv-ed\nraw_dir: .\n")
    assert helpers.run_cli(["serve", "--config", str(cfg), "--patients", "10", "--api-url", "http://127.0.0.1:9/api"])[0] == 2
    assert "--patients/--models go with --demo" in capsys.readouterr().err

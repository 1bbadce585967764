from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from tasks.storage.store import AuditStore


def test_datasets_lists_the_seven_clinical_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("chexpert", "mimic-cxr", "fitzpatrick", "fairvision", "embed", "ptb-xl", "mimic-iv-ed"):
        assert name in out


def test_architectures_lists_the_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["architectures"]) == 0
    out = capsys.readouterr().out
    for name in ("mlp", "tabresnet", "wrn_28_2", "resnet1d_128", "vit_b_16"):
        assert name in out


def test_sql_is_read_only_and_prints_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    AuditStore(tmp_path / "medaudit.duckdb").close()
    assert main(["sql", "--results", str(tmp_path), "SELECT 41 + 1 AS answer"]) == 0
    assert "42" in capsys.readouterr().out
    assert main(["sql", "--results", str(tmp_path), "DELETE FROM pools"]) == 2
    assert "read-only" in capsys.readouterr().err.lower()
    assert main(["sql", "--results", str(tmp_path), "SELECT 1", "--csv", str(tmp_path / "x.csv")]) == 0
    assert (tmp_path / "x.csv").read_text().strip().splitlines() == ["1", "1"]


def test_sql_without_a_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--results", str(tmp_path / "none"), "SELECT 1"]) == 2
    assert "no audit database" in capsys.readouterr().err


def test_invalid_config_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pool:\n  n_modles: 10\n")
    assert main(["audit", "mimic-iv-ed", str(tmp_path), "--config", str(cfg)]) == 2
    assert "n_modles" in capsys.readouterr().err


def test_small_pools_get_as_many_targets_as_leave_four_references(tmp_path: Path) -> None:
    import argparse

    from flows.options import build_config

    def targets(models: int | None, given: int | None = None, config: Path | None = None) -> int:
        ns = argparse.Namespace(config=config, models=models, targets=given, seed=None, arch=None, epochs=None)
        ns.__dict__.update(results=tmp_path, dask_address=None, workers=None)
        return build_config(ns, "mimic-iv-ed", tmp_path).pool.n_targets

    assert [targets(m) for m in (4, 6, 8, 12, 48)] == [0, 2, 4, 8, 8]
    assert targets(None) == 8 and targets(12, given=2) == 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pool:\n  n_targets: 2\n")
    assert targets(8, config=cfg) == 2  # a config file's choice is kept

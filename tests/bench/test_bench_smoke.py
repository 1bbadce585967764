"""Smoke test of the out-of-core benchmark: --quick runs end to end and reports what docs/BENCHMARKS.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_reports_times_memory_and_agreement(tmp_path: Path) -> None:
    out = tmp_path / "record_stats.json"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_record_stats.py"), "--quick", "--out", str(out), "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=120,  # about 20 s on 2 shared cores
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(proc.stdout) == report
    assert {
        "config",
        "build",
        "streaming",
        "in_memory",
        "time_ratio_in_memory_over_streaming",
        "memory_ratio_in_memory_over_streaming",
        "max_abs_diff",
        "same_results",
        "machine",
        "command",
    } <= set(report)
    assert report["config"]["records"] == 20_000 and report["config"]["models"] == 40
    for kind in ("streaming", "in_memory"):
        run = report[kind]
        assert {"wall_seconds", "seconds", "read_seconds", "compute_seconds", "peak_rss_mb", "ru_maxrss_mb"} <= set(run)
        assert run["seconds"] > 0 and run["peak_rss_mb"] > 0
    assert set(report["max_abs_diff"]) == {"auc", "auc_se", "auc_empirical", "auc_raw"}
    assert report["same_results"] and max(report["max_abs_diff"].values()) < 1e-9
    assert report["n_records_scored"] == 20_000
    assert not any(work.iterdir()), "the temporary DuckDB folder is removed"

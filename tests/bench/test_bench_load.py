"""The load benchmark's quick run: a whole audit completes, every model is stored once with a score
for every record, and the flow process stays within a memory bound (the full 200-model x 100k-record
figures are in docs/RELIABILITY.md; `-m heavy` runs this)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ROOT = Path(__file__).resolve().parents[2]


def test_quick_load_run_stores_every_model_once_within_a_memory_bound(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_load.py"), "--quick", "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["models"] == 20 and report["duplicate_models"] == 0
    assert report["score_rows"] == report["models"] * report["records"]  # one view: a score per model and record
    assert report["peak_rss_flow_process_mb"] < 1500

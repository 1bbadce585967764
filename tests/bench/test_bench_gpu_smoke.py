"""bench/bench_gpu.py --smoke: the GPU benchmark's code paths run on the CPU (tiny shapes, no compile)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.heavy
def test_bench_gpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["smoke"] and report["bf16_matmul_peak_flops"] > 0
    for w in report["workloads"].values():
        for path in ("today", "fast_eager", "plain"):
            assert w[path]["records_per_s"] > 0 and w[path]["models_per_hour"] > 0 and w[path]["pct_of_bf16_peak"] > 0
        assert w["flops_per_record"] > 0
    assert report["dp_sgd"]["ok"] and report["dp_sgd"]["account_unchanged"]
    proj = report["pool_projections_200_models"]
    assert set(proj) == {"chexpert", "mimic-cxr", "fitzpatrick", "fairvision", "embed", "ptb-xl", "mimic-iv-ed"}
    assert proj["chexpert"]["pool_flops"] > 1e18 and proj["chexpert"]["gpu_hours_at_peak"] > 0

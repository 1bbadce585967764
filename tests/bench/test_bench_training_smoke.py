"""Smoke test of the training benchmark: --quick runs end to end and reports what docs/PERFORMANCE.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ROOT = Path(__file__).resolve().parents[2]


def test_quick_training_benchmark_reports_rates_flops_and_cnn(tmp_path: Path) -> None:
    out = tmp_path / "training.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_training.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,  # about 35 s on 2 shared cores
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(proc.stdout) == report
    assert {"config", "matmul_peak", "mlp", "cnn", "machine", "total_seconds", "command"} <= set(report)
    assert report["config"]["quick"] and report["config"]["models"] == 4
    assert report["matmul_peak"]["flops_per_second"] > 0
    mlp = report["mlp"]
    assert {"training", "scoring", "end_to_end", "agreement", "flops", "width_scan", "steps_per_model"} <= set(mlp)
    for part in ("training", "end_to_end"):
        rates = mlp[part]
        for key in ("loop_models_per_hour", "batched_models_per_hour", "speedup_batched_over_loop", "speedup_batched_over_loop_cpu"):
            assert rates[key] > 0, (part, key)
    flops = mlp["flops"]
    assert flops["training_flops"] == 6 * flops["params"] * flops["samples"] > 0
    assert flops["batched_fraction_of_matmul_peak"] > 0 and flops["loop_fraction_of_matmul_peak"] > 0
    # batched and one-by-one training give the same models up to float rounding
    assert mlp["agreement"]["max_abs_logit_diff"] < 1e-3
    for variant in ("fp32", "bf16", "channels_last", "bf16_channels_last"):
        assert report["cnn"][variant]["best_wall_seconds"] > 0 and report["cnn"][variant]["speedup_over_fp32"] > 0

"""Benchmark of the swap null (tasks/risk/null.py) against the statistics step it rides along with.

Synthetic pool: ``--models`` models x ``--records`` records x 2 views, ``--records-per-patient`` records per
patient, complementary masks (tasks/training/masks.py), IN ~ N(d_j, 1) with heavy-tailed d_j, OUT ~ N(0, 1). Blocks of
``--block-size`` records are generated from per-block seeds (identical in both runs), and two child processes
run one after the other:

* ``stats``: what analyze_pool does per block today: ``record_statistics``;
* ``stats+null``: the same plus ``SwapNull.add`` per block (``--swaps`` swaps) and ``SwapNull.finish``.

Generating a block is timed and left out. Reported: seconds of the statistics step and of the null, both timed
block by block in the ``stats+null`` child (interleaved, so a change in machine load hits both alike), their
ratio null / statistics (target <= 1.5), the total time ratio of the two children, and the
peak RSS (VmHWM) of each child (target: the null run's peak at most the statistics run's peak x 1.5; the null's
own arrays are (swaps x patients) maxima plus a few (swaps x sub-block) products).

    .venv/bin/python bench/bench_null.py                  # 500,000 records x 200 models x 2 views, 100 swaps
    .venv/bin/python bench/bench_null.py --records 100000 # a fifth of it (what docs/STATISTICS.md quotes on 2 shared cores)
    .venv/bin/python bench/bench_null.py --quick          # 20,000 x 40, seconds

JSON goes to stdout and to ``--out`` (default bench/results/null.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

N_VIEWS = 2


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _block(lo: int, hi: int, masks: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([7, lo])
    n = hi - lo
    d = np.abs(rng.standard_t(2.5, n)) * 0.3
    in_mask = masks[:, codes[lo:hi]]
    scores = rng.standard_normal((masks.shape[0], n, N_VIEWS)) + (d[None, :] * in_mask)[:, :, None]
    return scores, in_mask


def child(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.attacks.record_auc import record_statistics
    from tasks.risk.null import SwapNull, patient_max_z
    from tasks.training.masks import pool_masks

    n_pat = -(-args.records // args.records_per_patient)
    codes = np.repeat(np.arange(n_pat), args.records_per_patient)[: args.records]
    masks = pool_masks(n_pat, 0, args.models)
    null = SwapNull(list(range(args.models)), n_pat, n_swaps=args.swaps, seed=0, threshold=0.9) if args.mode == "stats+null" else None
    t_gen = t_stats = t_null = 0.0
    t_all = time.perf_counter()
    for lo in range(0, args.records, args.block_size):
        hi = min(lo + args.block_size, args.records)
        t0 = time.perf_counter()
        scores, in_mask = _block(lo, hi, masks, codes)
        t1 = time.perf_counter()
        record_statistics(scores, in_mask)
        t2 = time.perf_counter()
        if null is not None:
            null.add(scores, in_mask, codes[lo:hi])
        t3 = time.perf_counter()
        t_gen, t_stats, t_null = t_gen + t1 - t0, t_stats + t2 - t1, t_null + t3 - t2
        del scores, in_mask
    if null is not None:
        t0 = time.perf_counter()
        res = null.finish(patient_max_z(np.concatenate(null.observed), codes, n_pat))
        t_null += time.perf_counter() - t0
        assert np.isfinite(res.patient_expected)
    total = time.perf_counter() - t_all - t_gen
    return {"mode": args.mode, "seconds": total, "stats_seconds": t_stats, "null_seconds": t_null, "peak_rss_mb": _peak_rss_mb()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--swaps", type=int, default=100)
    ap.add_argument("--records-per-patient", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=100_000, help="records per block (analyze_pool's default)")
    ap.add_argument("--quick", action="store_true", help="20,000 records x 40 models")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--mode", choices=["stats", "stats+null"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.records, args.models, args.block_size = 20_000, 40, 10_000
    if args.mode:
        print(json.dumps(child(args)))
        return 0
    runs = {}
    for mode in ("stats", "stats+null"):
        cmd = [sys.executable, __file__, "--mode", mode, "--records", str(args.records), "--models", str(args.models)]
        cmd += ["--swaps", str(args.swaps), "--records-per-patient", str(args.records_per_patient), "--block-size", str(args.block_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    s, sn = runs["stats"], runs["stats+null"]
    report = {
        "config": {k: getattr(args, k) for k in ("records", "models", "swaps", "records_per_patient", "block_size")} | {"views": N_VIEWS},
        "stats": s,
        "stats_plus_null": sn,
        "null_seconds": sn["null_seconds"],
        # both timed block by block in the same process, interleaved: load changes hit them alike
        "time_ratio_null_over_stats": sn["null_seconds"] / sn["stats_seconds"],
        "time_ratio_total": sn["seconds"] / s["seconds"],
        "memory_ratio": sn["peak_rss_mb"] / s["peak_rss_mb"],
        "targets": {"time_ratio_null_over_stats": 1.5, "memory_ratio": 1.5},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
    }
    out = args.out or ROOT / "bench" / "results" / ("null_quick.json" if args.quick else "null.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

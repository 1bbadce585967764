"""Load: a whole audit of a large synthetic ED cohort with a 200-model pool (issue 7).

Runs `medaudit demo` in a subprocess and samples the resident memory of its whole process tree
(flow process, Dask scheduler and workers) once a second. Reports wall time, peak total RSS, peak
RSS of the flow process, and what was stored. Usage:

    .venv/bin/python bench/bench_load.py --patients 44000 --models 200 --epochs 3
    .venv/bin/python bench/bench_load.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import psutil

from tasks.results_layout import db_path

ROOT = Path(__file__).resolve().parents[1]


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(RSS of the process, RSS of it and all its descendants) in bytes."""
    try:
        own = proc.memory_info().rss
        total = own + sum(c.memory_info().rss for c in proc.children(recursive=True) if c.is_running())
        return own, total
    except psutil.Error:
        return 0, 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=44_000, help="about 2.25 ED stays per patient: 44,000 -> ~100,000 records")
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2,000 patients x 20 models (smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a new temporary one, left for inspection)")
    args = ap.parse_args()
    if args.quick:
        args.patients, args.models, args.epochs = 2000, 20, 2
    work = args.work or Path(tempfile.mkdtemp(prefix="medaudit-load-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MEDAUDIT_HOME": str(work / "home"), "MEDAUDIT_SECRET_FILE": str(work / "secret")}
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "demo",
        "--patients",
        str(args.patients),
        "--models",
        str(args.models),
        "--targets",
        "10",
        "--epochs",
        str(args.epochs),
        "--results",
        str(work / "results"),
        "--json",
        "--no-progress",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ps = psutil.Process(proc.pid)
    peak_own = peak_total = 0
    while proc.poll() is None:
        own, total = tree_rss(ps)
        peak_own, peak_total = max(peak_own, own), max(peak_total, total)
        time.sleep(1.0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"audit failed (exit {proc.returncode})")
    res = json.loads(out[out.index("{") :])
    with duckdb.connect(str(db_path(work / "results")), read_only=True) as con:
        n_scores = con.sql("SELECT count(*) FROM scores").fetchall()[0][0]
        n_models = con.sql("SELECT count(DISTINCT model_idx) FROM pool_models").fetchall()[0][0]
        dup = con.sql("SELECT count(*) FROM (SELECT model_idx FROM pool_models GROUP BY ALL HAVING count(*) > 1)").fetchall()[0][0]
    report = {
        "patients": args.patients,
        "records": res["n_accepted"],
        "training_records": res["headline"]["n_records"],
        "models": n_models,
        "duplicate_models": dup,
        "epochs": args.epochs,
        "score_rows": n_scores,
        "wall_seconds": round(wall, 1),
        "peak_rss_flow_process_mb": round(peak_own / 2**20),
        "peak_rss_all_processes_mb": round(peak_total / 2**20),
        "db_size_mb": round((db_path(work / "results")).stat().st_size / 2**20),
        "lira_auc_mean": res["headline"]["lira_auc_mean"],
        "share_patients_above_threshold": res["headline"]["share_patients_above_threshold"],
        "command": " ".join(["bench/bench_load.py", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

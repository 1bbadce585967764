"""Out-of-core benchmark of per-record statistics (design D11): streaming over DuckDB vs one in-memory array.

Builds a DuckDB file with a synthetic pool (``--models`` models x ``--records`` records x 2 views of
scores; IN ~ N(d_j, 1), OUT ~ N(0, 1), d_j heavy-tailed), inserted model by model into the store's
``scores`` table, then runs -- each in a fresh subprocess, one after the other --

* ``streaming``: what analyze_pool does: AuditStore.load_masks, AuditStore.score_blocks (blocks of
  ``--block-size`` records) and tasks.attacks.record_auc.record_statistics per block;
* ``in_memory``: the straightforward way: every score in one (M, N, V) float64 array (loaded model
  by model), then the same statistics with plain numpy/scipy over the whole array;

and reports wall time, peak RSS (VmHWM of the child, and ru_maxrss from wait4), the ratios, and the
largest absolute difference between the two results (auc, auc_se, auc_empirical).

    .venv/bin/python bench/bench_record_stats.py                 # 500,000 records x 200 models
    .venv/bin/python bench/bench_record_stats.py --quick         # 20,000 x 40, for the smoke test

JSON goes to stdout and to ``--out`` (default bench/results/record_stats.json, or
record_stats_quick.json with --quick). The data file lives in a temporary folder (``--workdir``,
default the system temp dir) that is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

POOL = "bench-pool"
N_VIEWS = 2
SEED = 0
COMPARED = ("auc", "auc_se", "auc_empirical", "auc_raw")


def _peak_rss_mb(field: str = "VmHWM") -> float:
    """VmHWM (peak resident set; or another /proc field, e.g. VmRSS) of this process in MiB; ru_maxrss without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- data
def effects(n_records: int, seed: int = SEED) -> np.ndarray:
    """Per-record IN shift d_j: heavy-tailed (|t_2.5| x 0.3): most records barely exposed, a few very."""
    return np.abs(np.random.default_rng([seed, 1]).standard_t(2.5, n_records)) * 0.3


def build_database(db: Path, n_records: int, n_models: int, *, log: bool = True) -> dict[str, Any]:
    """Write the synthetic pool into a new DuckDB file through AuditStore, model by model."""
    import pyarrow as pa

    from tasks.storage.store import AuditStore, PoolRecord
    from tasks.training.masks import pool_masks

    t0 = time.perf_counter()
    masks = pool_masks(n_records, SEED, n_models)  # one record per patient
    d = effects(n_records)
    rec = np.repeat(np.arange(n_records, dtype=np.int64), N_VIEWS)
    view = np.tile(np.arange(N_VIEWS, dtype=np.int8), n_records)
    with AuditStore(db) as store:
        store.ensure_pool(
            PoolRecord(POOL, "bench", "bench-v1", "none", {}, {}, SEED, N_VIEWS, 0, "binary_logit", "bench", n_records),
            [f"p{i}" for i in range(n_records)],
        )
        for m in range(n_models):
            rng = np.random.default_rng([SEED, 2, m])
            score = rng.standard_normal((n_records, N_VIEWS)) + np.where(masks[m], d, 0.0)[:, None]
            prob = 1.0 / (1.0 + np.exp(-score))
            table = pa.table(
                {
                    "model_idx": np.full(n_records * N_VIEWS, m, np.int32),
                    "record_idx": rec,
                    "view": view,
                    "score": score.ravel(),
                    "prob": prob.ravel(),
                }
            )
            store.store_masks(POOL, masks[: m + 1])  # only model m's mask is new
            with store.transaction() as con:
                con.register("_scores", table)
                con.execute("INSERT INTO scores SELECT ?, model_idx, record_idx, view, score, prob FROM _scores", [POOL])
                con.unregister("_scores")
            if log and (m + 1) % max(1, n_models // 10) == 0:
                print(f"  built {m + 1}/{n_models} models ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        store.con.execute("CHECKPOINT")
    return {"build_seconds": time.perf_counter() - t0, "db_bytes": db.stat().st_size}


# ---------------------------------------------------------------- the two implementations
def run_streaming(
    db: Path, n_records: int, n_models: int, block_size: int, memory_limit: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """analyze_pool's path: masks, then score blocks from DuckDB into record_statistics."""
    import pandas as pd

    from tasks.attacks.record_auc import record_statistics
    from tasks.storage.store import AuditStore

    t0 = time.perf_counter()
    read = 0.0
    with AuditStore(db, read_only=True) as store:
        if memory_limit:
            store.con.execute(f"SET memory_limit = '{memory_limit}'")
        masks = store.load_masks(POOL, n_models)
        parts = []
        blocks = store.score_blocks(POOL, list(range(n_models)), np.arange(n_records), N_VIEWS, block_size)
        while True:
            tr = time.perf_counter()
            try:
                recs, scores = next(blocks)
            except StopIteration:
                break
            read += time.perf_counter() - tr
            parts.append(record_statistics(scores, masks[:, recs])[list(COMPARED)])
            del scores
    stats = pd.concat(parts, ignore_index=True)
    total = time.perf_counter() - t0
    return {c: stats[c].to_numpy() for c in COMPARED}, {"seconds": total, "read_seconds": read, "compute_seconds": total - read}


def run_in_memory(
    db: Path, n_records: int, n_models: int, memory_limit: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """All scores in one (M, N, V) array, then the same statistics in plain numpy/scipy over it."""
    import duckdb
    from scipy.special import ndtr
    from scipy.stats import rankdata

    t0 = time.perf_counter()
    con = duckdb.connect(str(db), read_only=True)
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    x = np.full((n_models, n_records, N_VIEWS), np.nan)
    for m in range(n_models):
        t = con.sql("SELECT record_idx, view, score FROM scores WHERE pool_key = ? AND model_idx = ?", params=[POOL, m]).fetchnumpy()
        x[m, t["record_idx"], t["view"].astype(np.int64)] = t["score"]
    mk = con.sql("SELECT model_idx, patient_pos FROM masks WHERE pool_key = ? AND is_in", params=[POOL]).fetchnumpy()
    inn = np.zeros((n_models, n_records), dtype=bool)
    inn[mk["model_idx"], mk["patient_pos"]] = True
    con.close()
    loaded = time.perf_counter()

    valid = np.isfinite(x).all(axis=2)  # (M, N)
    w_in, w_out = valid & inn, valid & ~inn

    def side(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cnt = w.sum(axis=0)
        wv = w[:, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            mu_v = np.where(wv, x, 0.0).sum(axis=0) / cnt[:, None]  # (N, V)
            var_v = (np.where(wv, x - mu_v, 0.0) ** 2).sum(axis=0) / cnt[:, None]
        const = (np.where(wv, x, -np.inf).max(axis=0) == np.where(wv, x, np.inf).min(axis=0)).all(axis=1)
        return cnt, mu_v.mean(axis=1), np.sqrt(var_v).mean(axis=1), const

    n1, mu_in, sd_in, c_in = side(w_in)
    n0, mu_out, sd_out, c_out = side(w_out)
    too_few = (n1 < 2) | (n0 < 2)
    zero_var = ~too_few & c_in & c_out
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_raw = ndtr((mu_in - mu_out) / np.hypot(sd_in, sd_out))
    auc_raw[zero_var] = np.where(mu_in[zero_var] > mu_out[zero_var], 1.0, 0.0)
    auc = np.clip(auc_raw, 0.5, 1.0)
    q0, q1 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(np.maximum((auc * (1 - auc) + (n1 - 1) * (q0 - auc**2) + (n0 - 1) * (q1 - auc**2)) / (n1 * n0), 0.0))
    se[zero_var] = 0.0
    xbar = np.where(valid, x.mean(axis=2), np.nan)
    ranks = rankdata(xbar, axis=0, nan_policy="omit")  # average ranks for ties, NaN stays NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        emp = (np.where(w_in, ranks, 0.0).sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)
    dead = too_few | (zero_var & (mu_in == mu_out))
    for arr in (auc_raw, auc, se, emp):
        arr[dead] = np.nan
    done = time.perf_counter()
    out = {"auc": auc, "auc_se": se, "auc_empirical": emp, "auc_raw": auc_raw}
    return out, {"seconds": done - t0, "read_seconds": loaded - t0, "compute_seconds": done - loaded}


def _child(args: argparse.Namespace) -> int:
    if args.child == "build":
        print(json.dumps(build_database(Path(args.db), args.records, args.models)))
        return 0
    import duckdb  # noqa: F401  (every library both paths use is imported before the baseline RSS)
    import pandas  # noqa: F401
    import scipy.stats  # noqa: F401

    import tasks.attacks.record_auc
    import tasks.storage.store  # noqa: F401

    base = _peak_rss_mb("VmRSS")
    if args.child == "streaming":
        res, times = run_streaming(Path(args.db), args.records, args.models, args.block_size, args.duckdb_memory_limit)
    else:
        res, times = run_in_memory(Path(args.db), args.records, args.models, args.duckdb_memory_limit)
    np.savez(args.result, **res)
    peak = _peak_rss_mb()
    print(json.dumps({**times, "peak_rss_mb": peak, "rss_after_imports_mb": base, "peak_rss_above_imports_mb": peak - base}))
    return 0


# ---------------------------------------------------------------- driver
def _run_child(kind: str, db: Path, result: Path, args: argparse.Namespace, stderr_to_terminal: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--db", str(db), "--result", str(result)]
    cmd += ["--records", str(args.records), "--models", str(args.models), "--block-size", str(args.block_size)]
    if args.duckdb_memory_limit:
        cmd += ["--duckdb-memory-limit", args.duckdb_memory_limit]
    out_file, err_file = result.with_suffix(".out"), result.with_suffix(".err")
    t0 = time.perf_counter()
    with out_file.open("w") as out, err_file.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=None if stderr_to_terminal else err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (ru_maxrss in KiB on Linux)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed (rc {proc.returncode}):\n{err_file.read_text()[-4000:]}")
    rep = json.loads(out_file.read_text().strip().splitlines()[-1])
    return {"wall_seconds": wall, **rep, "ru_maxrss_mb": usage.ru_maxrss / 1024}


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float | None:
    both = np.isfinite(a) & np.isfinite(b)
    if (np.isfinite(a) != np.isfinite(b)).any():
        return float("inf")
    return float(np.max(np.abs(a[both] - b[both]))) if both.any() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=None, help="records (one per patient); default 500000 (20000 with --quick)")
    ap.add_argument("--models", type=int, default=None, help="models (even); default 200 (40 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small run (20,000 records x 40 models) for the smoke test")
    ap.add_argument("--block-size", type=int, default=100_000, help="records per streamed block (analyze_pool's default)")
    ap.add_argument(
        "--duckdb-memory-limit",
        default=None,
        help="DuckDB memory_limit for both readers, e.g. 512MB (default: DuckDB's, 80%% of RAM, which lets its page cache grow)",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="where the temporary DuckDB file goes (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder with the DuckDB file")
    ap.add_argument("--out", type=Path, default=None, help="JSON output file")
    ap.add_argument("--child", choices=("build", "streaming", "in_memory"), help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.records is None:
        args.records = 20_000 if args.quick else 500_000
    if args.models is None:
        args.models = 40 if args.quick else 200
    if args.models % 2 or args.models < 4:
        ap.error("--models must be even and >= 4")
    if args.child:
        return _child(args)

    out_path = args.out or ROOT / "bench" / "results" / ("record_stats_quick.json" if args.quick else "record_stats.json")
    tmp = Path(tempfile.mkdtemp(prefix="medaudit-bench-", dir=args.workdir))
    try:
        db = tmp / "bench.duckdb"
        print(f"building {db}: {args.models} models x {args.records} records x {N_VIEWS} views", file=sys.stderr, flush=True)
        # in a subprocess too: a child forked from a big parent inherits its RSS in ru_maxrss
        build = _run_child("build", db, tmp / "build.npz", args, stderr_to_terminal=True)
        runs: dict[str, dict[str, Any]] = {}
        for kind in ("streaming", "in_memory"):
            print(f"running {kind} ...", file=sys.stderr, flush=True)
            runs[kind] = _run_child(kind, db, tmp / f"{kind}.npz", args)
            print(f"  {kind}: {runs[kind]['wall_seconds']:.1f} s, peak RSS {runs[kind]['peak_rss_mb']:.0f} MiB", file=sys.stderr)
        a, b = np.load(tmp / "streaming.npz"), np.load(tmp / "in_memory.npz")
        diffs = {c: _max_abs_diff(a[c], b[c]) for c in COMPARED}
        s, m = runs["streaming"], runs["in_memory"]
        report = {
            "config": {
                "records": args.records,
                "models": args.models,
                "views": N_VIEWS,
                "block_size": args.block_size,
                "duckdb_memory_limit": args.duckdb_memory_limit,
                "quick": args.quick,
                "score_values": args.records * args.models * N_VIEWS,
                "in_memory_array_mb": args.records * args.models * N_VIEWS * 8 / 2**20,
            },
            "build": {"seconds": build["build_seconds"], "db_mb": build["db_bytes"] / 2**20, "peak_rss_mb": build["ru_maxrss_mb"]},
            "streaming": s,
            "in_memory": m,
            # work time in the child (imports excluded) and peak RSS of the child (imports included)
            "time_ratio_in_memory_over_streaming": m["seconds"] / s["seconds"],
            "wall_ratio_in_memory_over_streaming": m["wall_seconds"] / s["wall_seconds"],
            "memory_ratio_in_memory_over_streaming": m["peak_rss_mb"] / s["peak_rss_mb"],
            "memory_ratio_above_imports": m["peak_rss_above_imports_mb"] / max(s["peak_rss_above_imports_mb"], 1e-9),
            "max_abs_diff": diffs,
            "same_results": all(v is not None and v < 1e-9 for v in diffs.values()),
            "n_records_scored": int(np.isfinite(a["auc"]).sum()),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "duckdb": __import__("duckdb").__version__,
            },
            "command": " ".join([Path(sys.executable).name, "bench/bench_record_stats.py", *(argv if argv is not None else sys.argv[1:])]),
        }
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)
    text = json.dumps(report, indent=2)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ingest: decode a 20,000-image dataset into a snapshot serially and through Dask (issue 3).

Writes a synthetic Fitzpatrick17k of ``--images`` images (one image per patient, JPEGs at the
writer's natural 90-128 px sizes, decoded to the adapter's default 64 x 64 RGB), then ingests it twice,
each time in a fresh subprocess:

* ``serial``: ``build_snapshot(..., mapper=None)`` in one process;
* ``dask``: a distributed LocalCluster of 2 worker processes x 1 thread; decode chunks go to the
  workers with ``client.submit``, at most ``--window`` in flight, results in order (the logic of
  ``flows.audit._prefect_mapper`` without Prefect).

For each it reports wall time, images/second and peak RSS (VmHWM from /proc) of the ingesting
process and, for Dask, of each worker; then the Dask/serial ratios. Both must give the same snapshot
version. Output: JSON on stdout and in ``--out``. Usage:

    .venv/bin/python bench/bench_ingest.py                  # 20,000 images
    .venv/bin/python bench/bench_ingest.py --quick          # 2,000 images
    .venv/bin/python bench/bench_ingest.py --images 5000 --work /tmp/ingest-bench

Memory stays bounded when the peak RSS of the full run is about that of ``--quick`` (inputs are
decoded and written chunk by chunk); with a ``--quick`` result present, the full run's JSON includes
that comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATASET = "fitzpatrick"
SECRET = b"medaudit-bench-ingest-secret-key"


def vmhwm_mb() -> float:
    """Peak resident set size of this process (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dask_mapper(client: Any, window: int) -> Callable[[Callable, Iterable[Any]], Iterator[Any]]:
    """Decode chunks on the cluster's workers, at most ``window`` in flight, results in order."""

    def mapper(fn: Callable, chunks: Iterable[Any]) -> Iterator[Any]:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(client.submit(fn, chunk, pure=False))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    return mapper


def _serial_map(fn: Callable, chunks: Iterable[Any]) -> Iterator[Any]:
    return map(fn, chunks)


def _timed(mapper: Callable, marks: dict[str, float]) -> Callable:
    """``mapper`` that notes when decoding starts (build_snapshot calls it right after read_records)."""

    def run(fn: Callable, chunks: Iterable[Any]) -> Iterator[Any]:
        marks["decode_start"] = time.perf_counter()
        return mapper(fn, chunks)

    return run


def child(mode: str, raw: Path, results: Path, workers: int, window: int, chunk_size: int) -> dict[str, Any]:
    """One ingest in this (fresh) process; returns its measurements."""
    from tasks.datasets import get_dataset
    from tasks.ingest.snapshot import build_snapshot

    adapter = get_dataset(DATASET)
    out: dict[str, Any] = {"mode": mode}
    client = cluster = None
    if mode == "dask":
        from distributed import Client, LocalCluster

        t = time.perf_counter()
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=40
        )
        client = Client(cluster)
        out["cluster_start_s"] = round(time.perf_counter() - t, 2)
        base = dask_mapper(client, window)
    else:
        base = _serial_map
    marks: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        snap = build_snapshot(adapter, raw, results, SECRET, chunk_size=chunk_size, mapper=_timed(base, marks))
        t1 = time.perf_counter()
        if client is not None:
            out["worker_peak_rss_mb"] = sorted(round(v, 1) for v in client.run(vmhwm_mb).values())
    finally:
        if client is not None:
            client.close()
            cluster.close()
    out.update(
        {
            "images": snap.n_accepted,
            "n_raw": snap.n_raw,
            "n_quarantined": snap.n_quarantined,
            "version": snap.version,
            "ingest_s": round(t1 - t0, 2),
            "read_records_s": round(marks["decode_start"] - t0, 2),
            "decode_write_s": round(t1 - marks["decode_start"], 2),
            "images_per_s": round(snap.n_accepted / (t1 - t0), 1),
            "decode_images_per_s": round(snap.n_accepted / (t1 - marks["decode_start"]), 1),
            "inputs_parquet_mb": round((snap.path / "inputs.parquet").stat().st_size / 2**20, 1),
            "peak_rss_mb": round(vmhwm_mb(), 1),
        }
    )
    if "worker_peak_rss_mb" in out:
        out["peak_rss_all_processes_mb"] = round(out["peak_rss_mb"] + sum(out["worker_peak_rss_mb"]), 1)
    return out


def write_fixture(raw: Path, images: int) -> float:
    """The synthetic Fitzpatrick17k of ``images`` images (reused when complete); seconds spent."""
    if (raw / ".complete").exists():
        return 0.0
    from tasks.synthetic import get_synthetic_writer

    t = time.perf_counter()
    get_synthetic_writer(DATASET)(raw, images, seed=0, awkward=False)
    (raw / ".complete").write_text("")
    return round(time.perf_counter() - t, 1)


def run_child(mode: str, raw: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    results = work / f"results-{mode}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", mode, "--_raw", str(raw), "--_results", str(results)]
    cmd += ["--workers", str(args.workers), "--window", str(args.window), "--chunk-size", str(args.chunk_size)]
    env = {
        **os.environ,
        "MEDAUDIT_HOME": str(work / "home"),
        "MEDAUDIT_SECRET_FILE": str(work / "secret"),
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{mode} ingest failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--quick", action="store_true", help="2,000 images (results in ingest_quick.json unless --out)")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes (1 thread each)")
    ap.add_argument("--window", type=int, default=4, help="decode chunks in flight (as flows/audit.py)")
    ap.add_argument("--chunk-size", type=int, default=2048, help="records per decode chunk (build_snapshot's default)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the fixture and snapshots (default: a new temp folder)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--_child", choices=["serial", "dask"], help=argparse.SUPPRESS)
    ap.add_argument("--_raw", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_results", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(child(args._child, args._raw, args._results, args.workers, args.window, args.chunk_size)))
        return
    if args.quick:
        args.images = 2000
    out_path = args.out or ROOT / "bench" / "results" / ("ingest_quick.json" if args.quick else "ingest.json")
    work = args.work or Path(tempfile.mkdtemp(prefix="medaudit-ingest-"))
    raw = work / f"fitzpatrick_{args.images}"
    fixture_s = write_fixture(raw, args.images)
    runs = {mode: run_child(mode, raw, work, args) for mode in ("serial", "dask")}
    serial, dask = runs["serial"], runs["dask"]
    if serial["version"] != dask["version"]:
        raise SystemExit(f"serial and Dask ingests differ: {serial['version']} != {dask['version']}")
    report: dict[str, Any] = {
        "benchmark": "ingest",
        "dataset": DATASET,
        "images": args.images,
        "fixture_write_s": fixture_s,
        "chunk_size": args.chunk_size,
        "window": args.window,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_avg_before": list(os.getloadavg()),
        "serial": serial,
        "dask": dask,
        "ratio_dask_over_serial": {
            "images_per_s": round(dask["images_per_s"] / serial["images_per_s"], 2),
            "decode_images_per_s": round(dask["decode_images_per_s"] / serial["decode_images_per_s"], 2),
            "peak_rss_ingesting_process": round(dask["peak_rss_mb"] / serial["peak_rss_mb"], 2),
            "peak_rss_all_processes": round(dask["peak_rss_all_processes_mb"] / serial["peak_rss_mb"], 2),
        },
        "same_snapshot_version": True,
        "command": " ".join(["python", "bench/bench_ingest.py", *sys.argv[1:]]),
    }
    quick_path = ROOT / "bench" / "results" / "ingest_quick.json"
    if not args.quick and quick_path.exists():
        quick = json.loads(quick_path.read_text())
        report["scaling_vs_quick"] = {
            "images_ratio": round(args.images / quick["images"], 1),
            "serial_peak_rss_ratio": round(serial["peak_rss_mb"] / quick["serial"]["peak_rss_mb"], 2),
            "dask_peak_rss_all_processes_ratio": round(dask["peak_rss_all_processes_mb"] / quick["dask"]["peak_rss_all_processes_mb"], 2),
        }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Shadow-model training throughput: one model at a time vs batched (torch.func vmap), plus CNN precision/layout.

In one process, on identical work (the same synthetic MIMIC-IV-ED snapshot, the same pool masks and
per-model seeds, the same recipe and number of models):

* ``mlp.loop``: a plain one-model-at-a-time PyTorch loop -- ``tasks.training.shadow.train_model`` per model
  (inputs standardised on the model's members first, as train_shadow_model does);
* ``mlp.batched``: ``tasks.training.batched.train_models_batched`` -- every model at once;

training only, interleaved ``--repeats`` times (the best time of each counts: the machine is shared;
wall and process CPU seconds are both reported, CPU time being far less sensitive to other processes),
then scoring every record; and end to end (train + score + write the shard and meta of every model):
``train_shadow_model`` per job vs ``train_shadow_models(jobs)``. Reported: seconds, models per hour,
speed-up ratios, largest logit difference and mean test AUROC of the two (they are the same models up
to float rounding), training FLOPs and achieved FLOP/s against a float32 matmul peak measured in the
same run with the same torch thread count. ``--scan-widths`` repeats the training comparison for
other MLP widths (the gain of batching shrinks as the per-model matmuls grow).

FLOPs of MLP training (analytic): a Linear layer of fan-in a and fan-out b costs 2ab FLOPs per sample
forward and 4ab backward (input and weight gradients), so one training sample costs about
6 x P FLOPs (P = parameter count, biases included; the first layer's unneeded input gradient is
counted too, as is usual). Training FLOPs = 6 x P x (optimizer steps x batch size), summed over the
models' *own* steps only (padded steps of the batched path are not useful work). The matmul peak is
2 n^3 FLOPs per (n x n) @ (n x n) float32 product, best of ``--matmul-reps``.

CNN: ``small_cnn`` (width_multiplier 0.25) on 32x32 RGB images, one epoch of ``--cnn-images`` through
train_model, as fp32, bf16 autocast, channels_last, and bf16 + channels_last (best of 3 each).

    .venv/bin/python bench/bench_training.py            # 16 MLPs, ~4,000-record snapshot, 20 epochs
    .venv/bin/python bench/bench_training.py --quick    # 4 MLPs, small snapshot, 2 epochs (smoke test)

JSON goes to stdout and ``--out`` (default bench/results/training.json, training_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

POOL_SEED = 0


def _standardized(x: np.ndarray, members: np.ndarray) -> np.ndarray:
    """train_shadow_model's rule: mean/std of the model's members, float32."""
    mu, sd = x[members].mean(axis=0), x[members].std(axis=0)
    return ((x - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def _mlp_params(n_features: int, n_outputs: int, width: int, depth: int) -> int:
    dims = [n_features] + [width] * depth + [n_outputs]
    return sum(a * b + b for a, b in itertools.pairwise(dims))


def matmul_peak(n: int, reps: int) -> dict[str, Any]:
    """Best float32 (n x n) @ (n x n) throughput, per wall second and per CPU second (2 n^3 FLOPs a product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    wall = cpu = float("inf")
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        torch.matmul(a, b)
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    flops = 2 * n**3
    return {
        "n": n,
        "reps": reps,
        "best_seconds": wall,
        "best_cpu_seconds": cpu,
        "flops_per_second": flops / wall,
        "flops_per_cpu_second": flops / cpu,
    }


def build_data(workdir: Path, n_patients: int, n_models: int) -> dict[str, Any]:
    from tasks.datasets import get_dataset
    from tasks.ingest.snapshot import build_snapshot
    from tasks.synthetic.mimic_iv_ed import write_ed_cohort
    from tasks.training.masks import model_seed, pool_masks
    from tasks.training.pool import training_patients

    write_ed_cohort(workdir / "raw", n_patients, seed=11)
    snap = build_snapshot(get_dataset("mimic-iv-ed"), workdir / "raw", workdir / "results", b"bench-training-secret-0123456789")
    train_idx, order, codes = training_patients(snap.records)
    masks = pool_masks(len(order), POOL_SEED, n_models)
    members = [train_idx[masks[m][codes]] for m in range(n_models)]
    return {
        "snap": snap,
        "x": snap.inputs(),
        "y": snap.labels(),
        "is_test": (snap.records["split"] == "test").to_numpy(),
        "members": members,
        "seeds": [model_seed(POOL_SEED, m) for m in range(n_models)],
    }


class Clock:
    """Wall seconds and CPU seconds of this process (CPU time is far less sensitive to other load on shared cores)."""

    def __enter__(self) -> Clock:
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def _rates(m_count: int, loop: list[Clock], batched: list[Clock]) -> dict[str, Any]:
    lw, bw = min(c.wall for c in loop), min(c.wall for c in batched)
    lc, bc = min(c.cpu for c in loop), min(c.cpu for c in batched)
    return {
        "loop_wall_seconds": [c.wall for c in loop],
        "batched_wall_seconds": [c.wall for c in batched],
        "loop_cpu_seconds": [c.cpu for c in loop],
        "batched_cpu_seconds": [c.cpu for c in batched],
        "loop_models_per_hour": m_count * 3600 / lw,
        "batched_models_per_hour": m_count * 3600 / bw,
        "speedup_batched_over_loop": lw / bw,
        "loop_models_per_cpu_hour": m_count * 3600 / lc,
        "batched_models_per_cpu_hour": m_count * 3600 / bc,
        "speedup_batched_over_loop_cpu": lc / bc,
    }


def bench_mlp(data: dict[str, Any], args: argparse.Namespace, workdir: Path, peak: dict[str, Any]) -> dict[str, Any]:
    from tasks.config import TrainRecipe
    from tasks.training.batched import score_models_batched, train_models_batched, train_shadow_models
    from tasks.training.shadow import ShadowJob, score_model, test_auroc, train_model, train_shadow_model

    snap, x, y, members, seeds = data["snap"], data["x"], data["y"], data["members"], data["seeds"]
    task = snap.task
    recipe = TrainRecipe(epochs=args.epochs, batch_size=args.batch_size)
    m_count = len(seeds)
    n_features = int(np.prod(task.input_shape))

    def loop_train(arch: dict[str, int]) -> list[Any]:
        return [
            train_model(_standardized(x, mem)[mem], y[mem], task, "mlp", arch, recipe, seed)[0]
            for mem, seed in zip(members, seeds, strict=True)
        ]

    def batched_train(arch: dict[str, int]) -> Any:
        return train_models_batched(x, y, members, task, "mlp", arch, recipe, seeds, standardize=True)

    def compare(arch: dict[str, int], repeats: int) -> tuple[list[Clock], list[Clock], list[Any], Any]:
        # warm-up outside the timings (first optimizer/autograd/vmap calls load lazily imported code)
        warm = [mem[: args.batch_size] for mem in members[:2]]
        one_epoch = recipe.model_copy(update={"epochs": 1})
        for mem, seed in zip(warm, seeds, strict=False):
            train_model(x[mem], y[mem], task, "mlp", arch, one_epoch, seed)
        train_models_batched(x, y, warm, task, "mlp", arch, one_epoch, seeds[:2], standardize=True)
        loop, batched = [], []
        for _ in range(repeats):  # interleaved: load from other processes hits both alike
            with Clock() as c:
                loop_models = loop_train(arch)
            loop.append(c)
            with Clock() as c:
                bm = batched_train(arch)
            batched.append(c)
            print(
                f"  mlp width {arch['width']} train: loop {loop[-1].wall:.2f} s ({loop[-1].cpu:.2f} s CPU), "
                f"batched {batched[-1].wall:.2f} s ({batched[-1].cpu:.2f} s CPU)",
                file=sys.stderr,
                flush=True,
            )
        return loop, batched, loop_models, bm

    arch = {"width": args.width, "depth": args.depth}
    loop, batched, loop_models, bm = compare(arch, args.repeats)

    with Clock() as loop_score:
        loop_logits = np.stack([score_model(mod, _standardized(x, mem), task, 1, 0) for mod, mem in zip(loop_models, members, strict=True)])
    with Clock() as batched_score:
        batched_logits = score_models_batched(bm, x)

    is_test = data["is_test"]

    def mean_auroc(logits: np.ndarray) -> float | None:
        vals = [test_auroc(lg[is_test], y[is_test]) for lg in logits]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    # end to end: train + score + write the shard and meta of every model
    rec = recipe.model_dump(mode="json")
    jobs = [
        ShadowJob("bench", m, seeds[m], str(snap.path), "mlp", arch, rec, 1, members[m], "", torch.get_num_threads())
        for m in range(m_count)
    ]
    e2e: dict[str, Clock] = {}
    for kind in ("loop", "batched"):
        kind_jobs = [dataclasses.replace(j, shard_dir=str(workdir / f"shards-{kind}")) for j in jobs]
        with Clock() as e2e[kind]:
            metas = [train_shadow_model(j) for j in kind_jobs] if kind == "loop" else train_shadow_models(kind_jobs)
        assert len(metas) == m_count and all(Path(mt["shard"]).exists() for mt in metas)
        print(f"  mlp end to end {kind}: {e2e[kind].wall:.2f} s ({e2e[kind].cpu:.2f} s CPU)", file=sys.stderr, flush=True)

    bs = min(args.batch_size, min(len(mem) for mem in members))
    steps = [max(len(mem) // bs, 1) * args.epochs for mem in members]
    samples = sum(steps) * bs

    def flops(width: int, loop: list[Clock], batched: list[Clock]) -> dict[str, Any]:
        n_params = _mlp_params(n_features, task.n_outputs, width, args.depth)
        total = 6 * n_params * samples
        lw, bw = min(c.wall for c in loop), min(c.wall for c in batched)
        lc, bc = min(c.cpu for c in loop), min(c.cpu for c in batched)
        return {
            "params": n_params,
            "training_flops": total,
            "loop_flops_per_second": total / lw,
            "batched_flops_per_second": total / bw,
            "loop_fraction_of_matmul_peak": total / lw / peak["flops_per_second"],
            "batched_fraction_of_matmul_peak": total / bw / peak["flops_per_second"],
            "loop_flops_per_cpu_second": total / lc,
            "batched_flops_per_cpu_second": total / bc,
            "loop_fraction_of_matmul_peak_cpu": total / lc / peak["flops_per_cpu_second"],
            "batched_fraction_of_matmul_peak_cpu": total / bc / peak["flops_per_cpu_second"],
        }

    scan = {}
    for width in args.scan_widths:
        w_loop, w_batched, _, _ = compare({"width": width, "depth": args.depth}, args.scan_repeats)
        scan[str(width)] = {**_rates(m_count, w_loop, w_batched), "flops": flops(width, w_loop, w_batched)}

    return {
        "architecture": {"name": "mlp", **arch, "params": _mlp_params(n_features, task.n_outputs, args.width, args.depth)},
        "recipe": rec,
        "models": m_count,
        "members_per_model": {"min": int(min(map(len, members))), "max": int(max(map(len, members)))},
        "steps_per_model": {"min": min(steps), "max": max(steps)},
        "training": _rates(m_count, loop, batched),
        "scoring": {"loop_wall_seconds": loop_score.wall, "batched_wall_seconds": batched_score.wall, "records": len(x)},
        "end_to_end": _rates(m_count, [e2e["loop"]], [e2e["batched"]]),
        "agreement": {
            "max_abs_logit_diff": float(np.abs(loop_logits - batched_logits).max()),
            "loop_mean_test_auroc": mean_auroc(loop_logits),
            "batched_mean_test_auroc": mean_auroc(batched_logits),
        },
        "flops": {
            "formula": "6 * params * samples; samples = sum over models of their own optimizer steps * batch size",
            "samples": samples,
            **flops(args.width, loop, batched),
        },
        "width_scan": scan,
    }


def bench_cnn(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.config import TrainRecipe
    from tasks.datasets.base import TaskSpec
    from tasks.training.shadow import train_model

    task = TaskSpec(
        kind="multiclass",
        label_names=tuple(f"c{i}" for i in range(10)),
        input_shape=(3, 32, 32),
        modality="image",
        score_transform="multiclass_logit",
        default_architecture="small_cnn",
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.cnn_images, 3, 32, 32)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.cnn_images)]
    variants = {
        "fp32": {},
        "bf16": {"precision": "bf16"},
        "channels_last": {"channels_last": True},
        "bf16_channels_last": {"precision": "bf16", "channels_last": True},
    }
    out: dict[str, Any] = {"architecture": "small_cnn", "width_multiplier": 0.25, "images": args.cnn_images, "batch_size": 128}
    for name, opts in variants.items():
        recipe = TrainRecipe(epochs=1, batch_size=128, **opts)
        train_model(x[:64], y[:64], task, "small_cnn", {"width_multiplier": 0.25}, recipe, 0)  # warm-up
        clocks = []
        for rep in range(args.cnn_repeats):
            with Clock() as c:
                train_model(x, y, task, "small_cnn", {"width_multiplier": 0.25}, recipe, rep)
            clocks.append(c)
        wall, cpu = min(c.wall for c in clocks), min(c.cpu for c in clocks)
        out[name] = {
            "wall_seconds": [c.wall for c in clocks],
            "cpu_seconds": [c.cpu for c in clocks],
            "best_wall_seconds": wall,
            "best_cpu_seconds": cpu,
            "images_per_second": args.cnn_images / wall,
        }
        print(f"  cnn {name}: {wall:.2f} s ({cpu:.2f} s CPU)", file=sys.stderr, flush=True)
    for name in variants:
        out[name]["speedup_over_fp32"] = out["fp32"]["best_wall_seconds"] / out[name]["best_wall_seconds"]
        out[name]["speedup_over_fp32_cpu"] = out["fp32"]["best_cpu_seconds"] / out[name]["best_cpu_seconds"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for the smoke test")
    ap.add_argument("--models", type=int, default=None, help="shadow models (even); default 16 (4 with --quick)")
    ap.add_argument("--patients", type=int, default=None, help="synthetic ED patients; default 1800 (~4,000 records; 300 with --quick)")
    ap.add_argument("--epochs", type=int, default=None, help="default 20 (2 with --quick)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=256, help="MLP width (the architecture's default)")
    ap.add_argument("--depth", type=int, default=2, help="MLP hidden layers (the architecture's default)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved training repeats; default 3 (1 with --quick)")
    ap.add_argument("--scan-widths", default=None, help="extra MLP widths, training only (comma list); default 64,128 (none with --quick)")
    ap.add_argument("--scan-repeats", type=int, default=2, help="interleaved repeats per scanned width")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = ExecutionConfig.torch_threads default)")
    ap.add_argument("--matmul-n", type=int, default=None, help="matmul size for the peak; default 2048 (512 with --quick)")
    ap.add_argument("--matmul-reps", type=int, default=20)
    ap.add_argument("--cnn-images", type=int, default=None, help="images in the CNN epoch; default 2000 (128 with --quick)")
    ap.add_argument("--cnn-repeats", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--no-cnn", action="store_true", help="skip the CNN part")
    ap.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = ap.parse_args(argv)
    q = args.quick
    args.models = args.models or (4 if q else 16)
    args.patients = args.patients or (300 if q else 1800)
    args.epochs = args.epochs or (2 if q else 20)
    args.repeats = args.repeats or (1 if q else 3)
    widths = args.scan_widths if args.scan_widths is not None else ("" if q else "64,128")
    args.scan_widths = [int(w) for w in widths.split(",") if w.strip()]
    args.matmul_n = args.matmul_n or (512 if q else 2048)
    args.cnn_images = args.cnn_images or (128 if q else 2000)
    args.cnn_repeats = args.cnn_repeats or (1 if q else 3)
    if args.models % 2 or args.models < 2:
        ap.error("--models must be even and >= 2")
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    out_path = args.out or ROOT / "bench" / "results" / ("training_quick.json" if q else "training.json")
    workdir = Path(tempfile.mkdtemp(prefix="medaudit-bench-training-"))
    t_all = time.perf_counter()
    try:
        print(f"building a {args.patients}-patient synthetic ED snapshot ...", file=sys.stderr, flush=True)
        data = build_data(workdir, args.patients, args.models)
        print(f"  {len(data['x'])} records ({time.perf_counter() - t_all:.1f} s)", file=sys.stderr, flush=True)
        from models import build_model  # noqa: F401  (imports every architecture once, outside the timings)

        peak = matmul_peak(args.matmul_n, args.matmul_reps)
        print(
            f"  matmul peak {peak['flops_per_second'] / 1e9:.1f} GFLOP/s ({peak['flops_per_cpu_second'] / 1e9:.1f} per CPU second)",
            file=sys.stderr,
            flush=True,
        )
        mlp = bench_mlp(data, args, workdir, peak)
        cnn = None if args.no_cnn else bench_cnn(args)
        report = {
            "config": {
                "quick": q,
                "models": args.models,
                "patients": args.patients,
                "records": len(data["x"]),
                "train_records": int((~data["is_test"]).sum()),
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "torch_threads": torch.get_num_threads(),
            },
            "matmul_peak": peak,
            "mlp": mlp,
            "cnn": cnn,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "load_average_start": load_start,
                "load_average_end": os.getloadavg(),
            },
            "total_seconds": time.perf_counter() - t_all,
            "command": " ".join([".venv/bin/python", "bench/bench_training.py", *(argv if argv is not None else sys.argv[1:])]),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(report, indent=2)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shadow-model training on a GPU: today's path, the fast path and a plain loop, side by side, plus pool projections.

One prepared script for a lent GPU machine (docs/PERFORMANCE.md, "GPU"): for each workload -- WRN-28-2 with
the paper's CheXpert and Fitzpatrick recipes, ResNet-1D-128 with the PTB-XL recipe, ViT-B/16 at 64 px
(CheXpert recipe) and the tabular ResNet (MIMIC-IV-ED recipe) -- it trains on synthetic inputs of the
dataset's shape, in one process, one after another:

* ``today``: ``tasks.training.shadow.train_model`` (host-side batches and augmentation, a host sync every step);
* ``fast``: ``tasks.training.fast.train_model_fast`` with torch.compile (``fast_eager`` without), inputs
  resident on the device; the compile is timed on a first model, throughput on a second model that reuses it
  (as every model of a pool after the first does);
* ``plain``: a plain loop for reference -- data resident on the device, a random flip, SGD, bf16
  autocast, no EMA, no gradient accumulation, no per-step sync (what a hand-written loop gets).

Reported per path: images (records) per second, models per hour at the dataset's paper size (one model sees
half the training records per epoch, for the recipe's epochs), and the share of the measured bf16 matmul
peak (FLOPs per record from tasks/training/cost.py: forward + backward matmuls and convolutions). Also: a DP-SGD run
on the device whose accounted epsilon must equal the CPU's, and the projected GPU-hours of a 200-model pool
at paper size for each of the seven datasets at the fast path's measured rate.

    python3 bench/bench_gpu.py --out "$OUT"           # on the GPU machine (about 6-8 minutes on an H200)
    .venv/bin/python bench/bench_gpu.py --smoke       # tiny shapes on the CPU, no compile (CI runs this)

JSON goes to ``--out``/bench_gpu.json (default bench/results/gpu.json, gpu_smoke.json with --smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# Paper sizes (docs/DATASETS.md; method §1.8 and method §2.2): training records, architecture, input, outputs, recipe.
PAPER = {
    "chexpert": {"records": 223_413, "arch": "wrn_28_2", "shape": (1, 64, 64), "outputs": 14, "kind": "multilabel", "recipe": "chexpert"},
    "mimic-cxr": {"records": 377_110, "arch": "wrn_28_2", "shape": (1, 64, 64), "outputs": 14, "kind": "multilabel", "recipe": "mimic-cxr"},
    "fitzpatrick": {
        "records": 16_175,
        "arch": "wrn_28_2",
        "shape": (3, 64, 64),
        "outputs": 3,
        "kind": "multiclass",
        "recipe": "fitzpatrick",
    },
    "fairvision": {"records": 19_982, "arch": "wrn_28_2", "shape": (1, 64, 64), "outputs": 7, "kind": "multiclass", "recipe": "fairvision"},
    "embed": {"records": 351_277, "arch": "wrn_28_2", "shape": (1, 64, 48), "outputs": 4, "kind": "multiclass", "recipe": "embed"},
    "ptb-xl": {"records": 19_601, "arch": "resnet1d_128", "shape": (12, 1000), "outputs": 5, "kind": "multilabel", "recipe": "ptb-xl"},
    "mimic-iv-ed": {"records": 340_000, "arch": "tabresnet", "shape": (64,), "outputs": 1, "kind": "binary", "recipe": "mimic-iv-ed"},
}
# MIMIC-IV-ED: the paper gives only an 80 % / 20 % benchmark split, no count; 340,000 training stays is an
# assumption (about 80 % of the ED module's stays), to be replaced by the snapshot's count where known.

_RECIPE_FIELDS = (
    "epochs",
    "learning_rate",
    "weight_decay",
    "batch_size",
    "momentum",
    "ema_decay",
    "warmup_fraction",
    "grad_accum_steps",
    "augment",
)
# method §2.2 (the bench adds bf16 autocast, and channels_last for images)
# fmt: off
RECIPES: dict[str, dict[str, Any]] = {name: dict(zip(_RECIPE_FIELDS, row, strict=True)) for name, row in {
    "chexpert":    (60, 1.0, 1e-4, 512, 0.9, 0.9995, 0.05, 2, "medium"),
    "mimic-cxr":   (60, 0.25, 1e-3, 512, 0.99, 0.95, 0.2, 2, "medium"),
    "fitzpatrick": (100, 5e-3, 1e-4, 256, 0.9, 0.99, 0.05, 1, "medium"),
    "fairvision":  (100, 1e-4, 1e-6, 256, 0.9, 0.99, 0.1, 1, "weak"),
    "embed":       (30, 0.1, 1e-8, 512, 0.9, 0.995, 0.1, 2, "strong"),
    "ptb-xl":      (100, 0.25, 5e-3, 512, 0.9, 0.995, 0.05, 2, "none"),
    "mimic-iv-ed": (100, 0.1, 1e-7, 512, 0.9, 0.995, 0.05, 2, "none"),
}.items()}
# fmt: on


@dataclass
class Workload:
    name: str
    dataset: str  # key of PAPER: shape, outputs, recipe, paper size
    arch: str
    arch_params: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None  # None: the recipe's
    grad_accum: int | None = None
    variants: bool = False  # also time the fast path without cuDNN autotuning, and count host syncs


WORKLOADS = [
    Workload("wrn_28_2/chexpert", "chexpert", "wrn_28_2", variants=True),
    Workload("wrn_28_2/fitzpatrick", "fitzpatrick", "wrn_28_2"),
    Workload("resnet1d_128/ptb-xl", "ptb-xl", "resnet1d_128"),
    Workload("tabresnet/mimic-iv-ed", "mimic-iv-ed", "tabresnet"),
    # last: no dataset's default architecture, so no pool projection depends on it
    Workload("vit_b_16/chexpert", "chexpert", "vit_b_16", batch_size=256, grad_accum=4),  # the paper's ViT batch at 64 px
]


# --smoke: small variants of the same code paths, on tiny shapes (the CI test)
SMOKE_WORKLOADS = [
    Workload("wrn_16_1/chexpert", "chexpert", "wrn", {"depth": 16, "width": 1}),
    Workload("resnet1d_32/ptb-xl", "ptb-xl", "resnet1d_32"),
]
SMOKE_SHAPES: dict[int, tuple[int, ...]] = {3: (1, 16, 16), 2: (12, 64), 1: (64,)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int, reps: int) -> float:
    """Best bf16 (n x n) @ (n x n) FLOP/s on ``device`` (2 n^3 a product)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    (a @ b).sum().item()
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t) / 10)
    return 2 * n**3 / best


def _task(dataset: str, shape: tuple[int, ...]) -> Any:
    from tasks.datasets.base import TaskSpec

    p = PAPER[dataset]
    modality = "image" if len(shape) == 3 else ("signal" if len(shape) == 2 else "tabular")
    transform = {"multilabel": "multilabel_logit", "multiclass": "multiclass_logit", "binary": "binary_logit"}[p["kind"]]
    return TaskSpec(
        kind=p["kind"],
        label_names=tuple(f"c{i}" for i in range(p["outputs"])),
        input_shape=tuple(shape),
        modality=modality,
        score_transform=transform,
        default_architecture=p["arch"],
    )


def _data(task: Any, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = task.input_shape
    if len(shape) == 3:  # 8-bit levels like decoded images (resident as uint8 on the fast path)
        x = (rng.integers(0, 256, (n, *shape)) / 127.5 - 1.0).astype(np.float32)
    else:
        x = rng.normal(size=(n, *shape)).astype(np.float32)
    c = task.n_outputs
    y = np.eye(c, dtype=np.float32)[rng.integers(0, c, n)] if task.kind == "multiclass" else rng.integers(0, 2, (n, c)).astype(np.float32)
    return x, y


def plain_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: Any, bs: int, steps: int, image: bool) -> None:
    """The reference loop: resident data, random flip, SGD, bf16 autocast, no EMA/accumulation/per-step sync."""
    from tasks.training.loop import task_loss, training_targets

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = task_loss(task)
    dev = x.device
    for _ in range(steps):
        idx = torch.randint(0, len(x), (bs,), device=dev)
        xb = x[idx]
        if image:
            flip = torch.rand(bs, device=dev) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb).contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = model(xb)
        loss_fn(out.float(), training_targets(y[idx], task)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _setup(w: Workload, smoke: bool) -> tuple[dict[str, Any], tuple[int, ...], Any, Any]:
    """(paper facts, input shape, TaskSpec, one-epoch TrainRecipe) of workload ``w``: the dataset's paper recipe
    with the workload's batch overrides, bf16 and (images) channels_last; tiny shapes and batches with ``smoke``."""
    from tasks.config import TrainRecipe

    p = PAPER[w.dataset]
    shape = SMOKE_SHAPES[len(p["shape"])] if smoke else p["shape"]
    rec = dict(RECIPES[p["recipe"]], epochs=1, precision="bf16", channels_last=len(shape) == 3)
    rec.update({k: v for k, v in (("batch_size", w.batch_size), ("grad_accum_steps", w.grad_accum)) if v})
    if smoke:
        rec["batch_size"] = min(rec["batch_size"], 8)
    return p, shape, _task(w.dataset, shape), TrainRecipe(**rec)


def bench_workload(w: Workload, args: argparse.Namespace, device: torch.device, peak: float) -> dict[str, Any]:
    from models import build_model
    from tasks.training.cost import training_flops_per_record
    from tasks.training.fast import resident_inputs, train_model_fast
    from tasks.training.shadow import train_model

    p, shape, task, recipe = _setup(w, args.smoke)
    image = len(shape) == 3
    bs = recipe.batch_size
    n = bs * args.steps  # one epoch of ``steps`` batches
    x, y = _data(task, n)
    flops = training_flops_per_record(w.arch, w.arch_params, task) or float("nan")
    out: dict[str, Any] = {
        "dataset": w.dataset,
        "arch": w.arch,
        "shape": list(shape),
        "batch_size": bs,
        "records_timed": n,
        "flops_per_record": flops,
    }
    dev = str(device)

    def rate(seconds: float) -> dict[str, float]:
        per_s = n / seconds
        records = p["records"] / 2 * RECIPES[p["recipe"]]["epochs"]  # a model sees half the records per epoch
        return {
            "seconds": seconds,
            "records_per_s": per_s,
            "models_per_hour": 3600 * per_s / records,
            "pct_of_bf16_peak": 100 * per_s * flops / peak,
        }

    def timed(fn: Any) -> float:
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t

    warm = min(n, bs * 2 * recipe.grad_accum_steps)
    # today's path (warm-up on two batches first: cuDNN autotuning, lazy imports)
    train_model(x[:warm], y[:warm], task, w.arch, w.arch_params, recipe, 0, dev)
    out["today"] = rate(timed(lambda: train_model(x, y, task, w.arch, w.arch_params, recipe, 1, dev)))
    print(f"  {w.name} today: {out['today']['records_per_s']:,.0f}/s", file=sys.stderr, flush=True)
    data = resident_inputs(x, device)
    members = np.arange(n)
    for label, compile_ in (("fast_eager", False), ("fast", True)):
        if compile_ and not args.compile:
            continue
        first = timed(
            lambda c=compile_: train_model_fast(data, members[:warm], y[:warm], task, w.arch, w.arch_params, recipe, 0, compile=c)
        )
        res = rate(timed(lambda c=compile_: train_model_fast(data, members, y, task, w.arch, w.arch_params, recipe, 1, compile=c)))
        res["first_model_seconds_incl_compile"] = first
        out[label] = res
        print(f"  {w.name} {label}: {res['records_per_s']:,.0f}/s (first model {first:.1f} s)", file=sys.stderr, flush=True)
    if w.variants and args.compile:  # cheap: the compiled module is reused, only a setting changes
        import tasks.training.fast as ft

        ft.CUDNN_BENCHMARK = False
        try:
            out["fast_no_cudnn_benchmark"] = res = rate(
                timed(lambda: train_model_fast(data, members, y, task, w.arch, w.arch_params, recipe, 1, compile=True))
            )
        finally:
            ft.CUDNN_BENCHMARK = True
        print(f"  {w.name} fast, cuDNN autotuning off: {res['records_per_s']:,.0f}/s", file=sys.stderr, flush=True)
    if w.variants and device.type == "cuda":
        out["host_syncs"] = host_syncs(
            lambda: train_model_fast(data, members, y, task, w.arch, w.arch_params, recipe, 2, compile=args.compile)
        )
    torch.manual_seed(0)
    model = build_model(w.arch, shape, task.n_outputs, task.modality, **w.arch_params).to(device)
    if image:
        model = model.to(memory_format=torch.channels_last)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    plain_loop(model, xt, yt, task, bs, 2, image)
    out["plain"] = rate(timed(lambda: plain_loop(model, xt, yt, task, bs, args.steps, image)))
    best = out.get("fast", out["fast_eager"])["records_per_s"]
    out["speedup_fast_over_today"] = best / out["today"]["records_per_s"]
    print(
        f"  {w.name} plain: {out['plain']['records_per_s']:,.0f}/s; fast/today {out['speedup_fast_over_today']:.2f}x",
        file=sys.stderr,
        flush=True,
    )
    return out


def host_syncs(fn: Any) -> dict[str, Any]:
    """Host synchronisations ``fn`` makes on CUDA (torch's sync debug mode): the fast path should make a few per model, not per step."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    from collections import Counter

    where = Counter(f"{Path(c.filename).name}:{c.lineno}" for c in caught if "synchronizing cuda operation" in str(c.message).lower())
    return {"count": sum(where.values()), "where": dict(where.most_common(12))}


def concurrent_processes(w: Workload, procs: int, args: argparse.Namespace) -> dict[str, Any]:
    """``procs`` processes on one GPU, each training ``w`` on the fast path, timed together after a barrier.

    The question of "fill the GPU": does more than one compiled model per GPU add throughput for a small
    architecture? Each worker compiles (Inductor's cache on disk makes that quick after the main process did),
    warms up, waits at the barrier, then trains one model; the aggregate rate is all records over the span
    from the go signal to the last worker's end.
    """
    import subprocess
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-procs-"))
    go = tmp / "go"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", w.name, "--steps", str(args.steps), "--go", str(go)]
    cmd += ["--device", str(args.device_used)] + (["--no-compile"] if not args.compile else []) + (["--smoke"] if args.smoke else [])
    logs = [(tmp / f"w{i}.err").open("w") for i in range(procs)]  # files, not pipes: a full pipe would stall a worker
    workers = [subprocess.Popen([*cmd, "--out", str(tmp / f"w{i}.json")], stderr=logs[i]) for i in range(procs)]
    deadline = time.time() + 240
    while time.time() < deadline and not all((tmp / f"w{i}.json.ready").exists() for i in range(procs)):
        if any(p.poll() not in (None, 0) for p in workers):
            break
        time.sleep(0.2)
    t_go = time.time()
    go.write_text("go")
    codes = [p.wait(timeout=300) for p in workers]
    for f in logs:
        f.close()
    if any(codes):
        return {"procs": procs, "error": (tmp / f"w{codes.index(next(c for c in codes if c))}.err").read_text()[-1500:]}
    res = [json.loads((tmp / f"w{i}.json").read_text()) for i in range(procs)]
    span = max(r["end"] for r in res) - t_go
    total = sum(r["records"] for r in res)
    return {"procs": procs, "records_per_s_all": total / span, "per_process": [r["records"] / (r["end"] - r["start"]) for r in res]}


def worker_main(args: argparse.Namespace, device: torch.device) -> int:
    """One process of ``concurrent_processes``: compile and warm up, signal ready, wait for go, train, report."""
    from tasks.training.fast import resident_inputs, train_model_fast

    w = next(x for x in WORKLOADS + SMOKE_WORKLOADS if x.name == args.worker)
    _, _, task, recipe = _setup(w, args.smoke)
    n = recipe.batch_size * args.steps
    x, y = _data(task, n, seed=os.getpid())
    data, members = resident_inputs(x, device), np.arange(n)
    warm = recipe.batch_size * 2 * recipe.grad_accum_steps
    train_model_fast(data, members[:warm], y[:warm], task, w.arch, w.arch_params, recipe, 0, compile=args.compile)
    _sync(device)
    Path(str(args.out) + ".ready").write_text("ready")
    while not Path(args.go).exists():
        time.sleep(0.01)
    start = time.time()
    train_model_fast(data, members, y, task, w.arch, w.arch_params, recipe, 1, compile=args.compile)
    _sync(device)
    args.out.write_text(json.dumps({"records": n, "start": start, "end": time.time()}))
    return 0


def dp_check(device: torch.device, smoke: bool) -> dict[str, Any]:
    """DP-SGD (patient level) on the device vs the CPU: the account must be identical, the weights finite."""
    from tasks.config import TrainRecipe
    from tasks.training.shadow import train_model

    task = _task("ptb-xl", (12, 64 if smoke else 250))
    x, y = _data(task, 128 if smoke else 512)
    units = np.repeat(np.arange(len(x) // 4), 4)
    recipe = TrainRecipe(epochs=2, batch_size=64, learning_rate=0.05, dp_epsilon=4.0, dp_unit="patient")
    acc = {}
    for dev in ("cpu", str(device)):
        model, stats = train_model(x, y, task, "resnet1d_32", {}, recipe, 0, dev, units=units)
        acc[dev] = {"account": stats["dp"], "finite": bool(all(torch.isfinite(p).all() for p in model.parameters()))}
    same = acc["cpu"]["account"] == acc[str(device)]["account"]
    return {"devices": acc, "account_unchanged": same, "ok": same and all(a["finite"] for a in acc.values())}


def projections(results: dict[str, Any], peak: float) -> dict[str, Any]:
    """GPU-hours of a 200-model pool at paper size per dataset, at the fast path's measured FLOP/s of its architecture."""
    from tasks.training.cost import pool_compute, training_flops_per_record

    achieved = {}  # FLOP/s by (dataset, arch) measured on that dataset's recipe, else by arch on any recipe
    for r in results.values():
        best = r.get("fast") or r.get("fast_eager")
        if best is not None and np.isfinite(r["flops_per_record"]):
            achieved[(r["dataset"], r["arch"])] = best["records_per_s"] * r["flops_per_record"]
            achieved.setdefault(r["arch"], best["records_per_s"] * r["flops_per_record"])
    out = {}
    for name, p in PAPER.items():
        task = _task(name, p["shape"])
        flops = training_flops_per_record(p["arch"], {}, task)
        c = pool_compute(200, RECIPES[p["recipe"]]["epochs"], p["records"] / 2, flops)
        own = achieved.get((name, p["arch"]))
        rate = own or achieved.get(p["arch"])
        out[name] = {
            "arch": p["arch"],
            "train_records": p["records"],
            "epochs": RECIPES[p["recipe"]]["epochs"],
            "pool_flops": c.flops,
            "gpu_hours_fast_path": None if rate is None or c.flops is None else c.flops / rate / 3600,
            "gpu_hours_at_peak": None if c.flops is None else c.flops / peak / 3600,
            "basis": (
                f"measured FLOP/s of {p['arch']} on this dataset's recipe (fast path)"
                if own
                else f"measured FLOP/s of {p['arch']} on another dataset's recipe (fast path)"
                if rate
                else "no measurement of this architecture"
            ),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, no compile (the CI test)")
    ap.add_argument("--steps", type=int, default=None, help="timed batches per path (default 100 on CUDA, 40 elsewhere; 2 with --smoke)")
    ap.add_argument("--only", default=None, help="comma list of workload names (default: all)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile path")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--out", type=Path, default=None, help="output folder (bench_gpu.json) or .json file")
    ap.add_argument("--budget-s", type=float, default=480.0, help="start no further workload after this many seconds")
    ap.add_argument("--procs", default=None, help="comma list of process counts for the one-GPU concurrency check ('' skips it)")
    ap.add_argument("--no-dp", dest="dp", action="store_false", help="skip the DP-SGD check")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one process of the concurrency check
    ap.add_argument("--go", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.procs = args.procs if args.procs is not None else ("2" if args.smoke else "4")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.steps = args.steps or (2 if args.smoke else 100 if device.type == "cuda" else 40)
    args.device_used = device
    if args.smoke:
        args.compile = False
    if args.worker:
        return worker_main(args, device)
    workloads = [w for w in (SMOKE_WORKLOADS if args.smoke else WORKLOADS) if args.only is None or w.name in args.only.split(",")]
    out = args.out or ROOT / "bench" / "results" / ("gpu_smoke.json" if args.smoke else "gpu.json")
    out = out / "bench_gpu.json" if out.suffix != ".json" else out
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    peak = matmul_peak(device, 512 if args.smoke or device.type == "cpu" else 8192, 3 if args.smoke else 10)
    print(f"bf16 matmul peak on {device}: {peak / 1e9:,.1f} GFLOP/s", file=sys.stderr, flush=True)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "smoke": args.smoke,
        "bf16_matmul_peak_flops": peak,
        "steps_timed": args.steps,
        "workloads": {},
        "command": " ".join(["bench/bench_gpu.py", *(argv if argv is not None else sys.argv[1:])]),
    }

    def save() -> None:  # after every step: a run cut short by the machine's time limit still leaves its numbers
        report["total_seconds"] = time.perf_counter() - t0
        report["load_average"] = os.getloadavg()
        out.write_text(json.dumps(report, indent=2, default=float) + "\n")

    def guarded(label: str, fn: Any) -> Any:
        if time.perf_counter() - t0 > args.budget_s:
            print(f"  {label}: skipped (over the {args.budget_s:.0f} s budget)", file=sys.stderr, flush=True)
            return {"skipped": f"over the {args.budget_s:.0f} s budget"}
        try:
            return fn()
        except Exception as exc:  # one failing workload must not cost the others' numbers on a short lease
            import traceback

            print(f"  {label}: FAILED {exc!r}", file=sys.stderr, flush=True)
            return {"error": repr(exc), "traceback": traceback.format_exc()[-3000:]}

    counts = [int(n) for n in args.procs.split(",")] if args.procs else []
    for i, w in enumerate(workloads):
        report["workloads"][w.name] = guarded(w.name, lambda w=w: bench_workload(w, args, device, peak))
        if i == 0 and args.dp:  # right after the headline workload: the DP-SGD check must run even on a short lease
            report["dp_sgd"] = guarded("dp_sgd", lambda: dp_check(device, args.smoke))
        if w.dataset == "ptb-xl" and counts:  # a small model: does a second process fill the GPU? (its compile is cached now)
            runs = [guarded(f"{w.name} x{n}", lambda n=n, w=w: concurrent_processes(w, n, args)) for n in counts]
            report.setdefault("concurrent_processes", {})[w.name] = runs
        ok = {k: v for k, v in report["workloads"].items() if "error" not in v and "skipped" not in v}
        report["pool_projections_200_models"] = projections(ok, peak)
        save()
    if "dp_sgd" not in report and args.dp:
        report["dp_sgd"] = guarded("dp_sgd", lambda: dp_check(device, args.smoke))
    save()
    print(json.dumps(report, indent=2, default=float))
    dp = report.get("dp_sgd", {"ok": not args.dp})
    return 0 if dp.get("ok") and not any("error" in v for v in report["workloads"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

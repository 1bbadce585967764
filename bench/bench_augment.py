"""Per-batch cost of training augmentation (tasks/training/augment.py) against a small_cnn training step.

For image batches (B, C, S, S) it times, per policy:

* ``legacy``: the augmentation train_model used before the v2 registry (plain batch tensor ops, one
  shift and one rotation per batch, only the flip per sample; kept here for the comparison);
* ``v2_loop``: the definition -- the policy's v2 pipeline run on each sample in turn (``reference``);
* ``v2_batched``: what training runs -- the same per-sample result computed batched (``apply``);

and one training step of ``small_cnn`` (forward, backward, SGD step, as train_model) on a batch of the
same shape, at full width in float32 and as the demo pools train it (width 0.25, bf16 autocast,
channels_last). Everything runs with one torch thread, as a shadow-model worker does (ShadowJob.torch_threads),
and the best of ``--repeats`` interleaved rounds counts; both process CPU and wall milliseconds are
reported (CPU time is far less sensitive to other processes on a shared machine).

    .venv/bin/python bench/bench_augment.py            # S in {32, 64}, B in {64, 128, 256}
    .venv/bin/python bench/bench_augment.py --quick    # S=32, B=128, fewer repeats

JSON goes to stdout and ``--out`` (default bench/results/augment.json, augment_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import build_model  # noqa: E402
from tasks.training.augment import get_augmentation  # noqa: E402

POLICIES = ("flip", "weak", "medium", "strong")


def legacy_augment(x: torch.Tensor, policy: str, gen: torch.Generator) -> torch.Tensor:
    """train_model's augmentation before tasks/training/augment.py (TRAINING_CODE_VERSION 1)."""
    if policy == "none" or x.dim() != 4:
        return x
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if policy in ("weak", "medium"):
        pad_h, pad_w = max(1, x.shape[2] // 8), max(1, x.shape[3] // 8)
        padded = nn.functional.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
        dy = int(torch.randint(0, 2 * pad_h + 1, (1,), generator=gen))
        dx = int(torch.randint(0, 2 * pad_w + 1, (1,), generator=gen))
        x = padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
    if policy == "medium":
        angle = math.radians(float(torch.empty(1).uniform_(-10, 10, generator=gen)))
        theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]], dtype=x.dtype)
        grid = nn.functional.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        x = nn.functional.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    return x


def train_step(shape: tuple[int, int, int], batch: int, width: float, bf16: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model("small_cnn", shape, 2, "image", width_multiplier=width)
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(batch, *shape) * 2 - 1, torch.randint(0, 2, (batch,))
    model.train()

    def step() -> None:
        xb = x.contiguous(memory_format=torch.channels_last) if bf16 else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(xb)
        nn.functional.cross_entropy(out.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def best_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Best CPU and wall ms of each function over ``repeats`` interleaved rounds (after one warm-up)."""
    for fn in fns.values():
        fn()
    best = {k: {"cpu_ms": math.inf, "wall_ms": math.inf} for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c, w = time.process_time(), time.perf_counter()
            fn()
            best[k]["cpu_ms"] = min(best[k]["cpu_ms"], (time.process_time() - c) * 1e3)
            best[k]["wall_ms"] = min(best[k]["wall_ms"], (time.perf_counter() - w) * 1e3)
    return {k: {m: round(v, 2) for m, v in d.items()} for k, d in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes, batches = ((32,), (128,)) if args.quick else ((32, 64), (64, 128, 256))
    repeats = args.repeats or (3 if args.quick else 7)
    step_repeats = max(2, repeats // 2)
    report: dict[str, object] = {"torch_threads": 1, "repeats": repeats, "augment": [], "train_step": []}
    for size in sizes:
        for channels in (1, 3):
            shape = (channels, size, size)
            for batch in batches:
                x = torch.rand(batch, *shape) * 2 - 1
                gen = torch.Generator().manual_seed(0)
                fns: dict[str, Callable[[], object]] = {}
                for name in POLICIES:
                    policy = get_augmentation(name)
                    fns[f"{name}.v2_batched"] = lambda p=policy, x=x, g=gen: p(x, g)
                    if name != "strong":
                        fns[f"{name}.legacy"] = lambda n=name, x=x, g=gen: legacy_augment(x, n, g)
                    if batch == 128:  # the loop is slow; one batch size shows it
                        fns[f"{name}.v2_loop"] = lambda p=policy, x=x: p.reference(x, 0)
                row = {"channels": channels, "size": size, "batch": batch, **best_ms(fns, repeats)}
                report["augment"].append(row)  # type: ignore[attr-defined]
                print(json.dumps(row), file=sys.stderr)
        for width, bf16 in ((1.0, False), (0.25, True)):
            row = {"size": size, "channels": 1, "batch": 128, "width_multiplier": width, "bf16_channels_last": bf16}
            row.update(best_ms({"step": train_step((1, size, size), 128, width, bf16)}, step_repeats)["step"])
            report["train_step"].append(row)  # type: ignore[attr-defined]
            print(json.dumps(row), file=sys.stderr)
    out = args.out or ROOT / "bench" / "results" / ("augment_quick.json" if args.quick else "augment.json")
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""Simulation study of the FDR rule (docs/STATISTICS.md): power and realised FDR vs pool size and cohort size.

Pools from tasks/audit/simulate.py: 3% of the patients memorised, a third each at record AUC 0.92, 0.97 and
0.995; 2 records per patient on average; complementary masks; a model offset shared by all records. Two rules:

* ``controlled`` (medaudit's default): risk >= 0.9 and swap q-value <= 0.05 (100 swaps);
* ``raw`` (the paper's count): risk >= 0.9.

For each (models, patients) cell, ``--reps`` pools; realised FDR = false flags / max(flags, 1), averaged, with
its Monte-Carlo standard error; power per planted strength = share of those patients flagged.

    .venv/bin/python bench/simulate_fdr.py                      # 8..256 models x 500 / 2000 patients, 10 pools each
    .venv/bin/python bench/simulate_fdr.py --models 8 16 --patients 500 --reps 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tasks.audit.simulate import audit_simulated, simulate_pool  # noqa: E402

STRENGTHS = (0.92, 0.97, 0.995)


def cell(n_models: int, n_patients: int, reps: int) -> list[dict[str, object]]:
    out: dict[str, dict[str, list[float]]] = {
        r: {"fdp": [], **{f"power_{s}": [] for s in STRENGTHS}, "flagged": []} for r in ("controlled", "raw")
    }
    expected = []
    for rep in range(reps):
        pool = simulate_pool(n_patients, n_models, planted_share=0.03, planted_auc=STRENGTHS, seed=10_000 * n_models + 7 * n_patients + rep)
        a = audit_simulated(pool, seed=rep)
        expected.append(a.expected)
        for rule, flags in (("controlled", a.at_risk), ("raw", a.raw)):
            o = out[rule]
            o["fdp"].append((flags & ~pool.planted).sum() / max(flags.sum(), 1))
            o["flagged"].append(flags.sum())
            for s in STRENGTHS:
                sel = pool.strength == s
                o[f"power_{s}"].append(flags[sel].mean())
    rows = []
    for rule, o in out.items():
        fdp = np.asarray(o["fdp"])
        rows.append(
            {
                "models": n_models,
                "patients": n_patients,
                "rule": rule,
                "fdr": float(fdp.mean()),
                "fdr_mc_se": float(fdp.std(ddof=1) / np.sqrt(len(fdp))) if len(fdp) > 1 else float("nan"),
                "flagged": float(np.mean(o["flagged"])),
                "expected_by_chance": float(np.mean(expected)),
                **{f"power_auc_{s}": float(np.mean(o[f"power_{s}"])) for s in STRENGTHS},
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    ap.add_argument("--patients", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "simulate_fdr.json")
    args = ap.parse_args()
    rows = []
    for p in args.patients:
        for m in args.models:
            for r in cell(m, p, args.reps):
                rows.append(r)
                print(json.dumps(r), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"reps": args.reps, "strengths": STRENGTHS, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

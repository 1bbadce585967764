"""`medaudit dp-sweep`: one DP-SGD pool per (epsilon, unit) on the same snapshot; bound versus empirical risk (design D17).

Every pool is audited by flows.audit.run_audit (stored models are reused, only missing ones are
trained); its row (tasks/audit/dp_sweep.py) puts the accounted privacy, the bound it implies and the
empirical risk side by side, and tasks/report/dp_sweep.py plots them.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from tasks.results_layout import demo_data_dir, study_report_dir

PAPER_EPSILONS = "1,5,10,100,1000,inf"


def parse_epsilons(text: str) -> list[float]:
    """``"1,5,inf"`` -> [1.0, 5.0, inf]: positive numbers or inf, sorted, duplicates dropped."""
    from tasks.errors import ConfigError

    values: list[float] = []
    for item in filter(None, (t.strip() for t in str(text).split(","))):
        try:
            eps = math.inf if item.lower() in {"inf", "infinity", "∞"} else float(item)
        except ValueError:
            raise ConfigError(f"--epsilons: {item!r} in {text!r} is not a number (use e.g. 1,10,inf)") from None
        if math.isnan(eps) or eps <= 0:
            raise ConfigError(f"--epsilons: {item!r} in {text!r} must be > 0 (inf = no DP)")
        if eps not in values:
            values.append(eps)
    if not values:
        raise ConfigError(f"--epsilons {text!r} names no epsilon")
    return sorted(values)


def parse_units(text: str) -> list[str]:
    """``"record,patient"`` -> ["record", "patient"] (order kept, duplicates dropped)."""
    from tasks.audit.dp_sweep import UNITS
    from tasks.errors import ConfigError

    units: list[str] = []
    for item in filter(None, (t.strip().lower() for t in str(text).split(","))):
        if item not in UNITS:
            raise ConfigError(f"--units: {item!r} in {text!r} is not a DP unit; use {' or '.join(UNITS)}")
        if item not in units:
            units.append(item)
    if not units:
        raise ConfigError(f"--units {text!r} names no unit")
    return units


_PRINTED = {
    "unit": "unit",
    "target_epsilon": "eps",
    "epsilon_median": "eps_acct",
    "noise_multiplier": "sigma",
    "sampling_rate": "q",
    "steps": "steps",
    "n_units": "units",
    "auc_bound": "bound",
    "lira_auc_mean": "lira_auc",
    "p99_record_auc": "rec_p99",
    "max_record_auc": "rec_max",
    "bound_noise_limit": "noise_lim",
    "patients_above_threshold": "pat>=thr",
    "test_auroc_mean": "auroc",
    "test_auroc_std": "auroc_sd",
}


def cmd_dp_sweep(args: argparse.Namespace) -> int:
    from tasks.errors import ConfigError

    epsilons = parse_epsilons(args.epsilons)  # options first: a typo fails before anything heavy is imported or written
    units = parse_units(args.units)
    if args.clip_norm is not None and not (math.isfinite(args.clip_norm) and args.clip_norm > 0):
        raise ConfigError(f"--clip-norm must be a positive number, got {args.clip_norm:g}")

    from flows.audit import run_audit
    from flows.options import build_config
    from tasks.audit.dp_sweep import NO_DP, dp_config, sweep_row
    from tasks.report.dp_sweep import dp_sweep_plot
    from tasks.synthetic.demo_pools import DEMO_RECIPE, demo_options

    raw_dir = args.raw_dir
    if raw_dir is None:  # synthetic cohort of the dataset's layout, with the demo's (quick) pool and adapter options
        raw_dir = demo_data_dir(args.results, args.dataset, args.patients)
        base_cfg = build_config(args, args.dataset, raw_dir, default_recipe=DEMO_RECIPE, base_options=demo_options(args.dataset))
        if not raw_dir.exists():  # written after the configuration is validated
            from tasks.synthetic import write_cohort_once

            write_cohort_once(args.dataset, raw_dir, args.patients)
    else:
        base_cfg = build_config(args, args.dataset, raw_dir)
    points = [(NO_DP, eps) if math.isinf(eps) else (unit, eps) for eps in epsilons for unit in units]
    rows = []
    for unit, eps in dict.fromkeys(points):  # inf once, not once per unit
        cfg = dp_config(base_cfg, eps, unit, args.clip_norm)
        print("== no DP (epsilon inf)" if unit == NO_DP else f"== epsilon {eps:g}, {unit}-level DP")
        res = run_audit(cfg, show_progress=not args.no_progress)
        print(f"   pool {res['pool_key']}: {res['headline'].get('trained', 0)} of {cfg.pool.n_models} models trained now")
        rows.append(sweep_row(cfg, res, unit, eps))
    table = pd.DataFrame(rows)
    from tasks.datasets import get_dataset

    out = study_report_dir(args.results, "dp_sweep", get_dataset(args.dataset).name)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "dp_sweep.csv", index=False)
    dp_sweep_plot(table, out / "dp_sweep.png")
    for r in table[table["exceeds_bound"]].itertuples():  # a warning, not a failure
        print(
            f"medaudit: warning: {r.unit}-level epsilon {r.target_epsilon:g}: the highest covered record AUC "
            f"{r.max_covered_record_auc:.3f} exceeds the theoretical bound {r.auc_bound:.3f} beyond estimation noise "
            f"(95% limit {r.bound_noise_limit:.3f}); check the DP training and accounting of pool {r.pool_key}",
            file=sys.stderr,
        )
    if args.json:
        print(table.to_json(orient="records", indent=2))
        return 0
    print()
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        shown = table[list(_PRINTED)].rename(columns=_PRINTED)
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", formatters={"bound": lambda v: f"{v:.6g}"}))
    print(f"\nplot  {out / 'dp_sweep.png'}\ntable {out / 'dp_sweep.csv'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from flows.options import add_run_options

    p = sub.add_parser("dp-sweep", help="one DP-SGD pool per (epsilon, unit) on the same data: empirical risk versus the DP bound")
    p.add_argument("dataset")
    p.add_argument("raw_dir", type=Path, nargs="?", default=None, help="raw data (default: a synthetic cohort of the dataset's layout)")
    p.add_argument("--epsilons", default=PAPER_EPSILONS, help="comma-separated target epsilons, inf = no DP (default %(default)s)")
    p.add_argument("--units", default="record,patient", help="DP units: record, patient or both (default %(default)s)")
    p.add_argument("--clip-norm", type=float, default=None, help="DP-SGD clipping norm C (default: the recipe's, 1.0)")
    p.add_argument("--patients", type=int, default=1000, help="synthetic cohort size when no raw_dir is given")
    add_run_options(p, models_default=None)
    p.set_defaults(func=cmd_dp_sweep)

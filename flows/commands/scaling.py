"""`medaudit scaling`: one pool per architecture on the same snapshot, risk versus capacity (design D17).

The rows are tasks/audit/scaling.py, the plot tasks/report/scaling.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.results_layout import demo_data_dir, study_report_dir


def parse_archs(text: str) -> list[dict[str, Any]]:
    """``"mlp:width=16:depth=1,tabresnet"`` -> [{"name": "mlp", "params": {...}}, {"name": "tabresnet", "params": {}}]."""
    archs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, *pairs = item.split(":")
        params: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"architecture option {pair!r} in {item!r} is not key=value")
            try:
                params[key] = json.loads(value)
            except json.JSONDecodeError:
                params[key] = value
        archs.append({"name": name, "params": params})
    if not archs:
        raise ValueError("--archs names no architecture")
    return archs


def cmd_scaling(args: argparse.Namespace) -> int:
    from flows.audit import run_audit
    from flows.options import build_config, parse_options
    from tasks.audit.scaling import arch_label, scaling_row
    from tasks.datasets import get_dataset
    from tasks.errors import ConfigError
    from tasks.report.scaling import scaling_plot
    from tasks.synthetic import write_cohort_once
    from tasks.synthetic.demo_pools import DEMO_RECIPE

    try:
        archs = parse_archs(args.archs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    raw_dir = args.raw_dir
    recipe = "paper"
    if raw_dir is None:  # synthetic cohort of the dataset's layout, with the demo's (quick) recipe
        raw_dir = demo_data_dir(args.results, args.dataset, args.patients)
        write_cohort_once(args.dataset, raw_dir, args.patients)
        recipe = DEMO_RECIPE
    task = get_dataset(args.dataset, parse_options(args.option)).task
    rows, curves = [], {}
    for arch in archs:
        args.arch = None
        cfg = build_config(args, args.dataset, raw_dir, {"architecture": arch}, default_recipe=recipe)
        print(f"== {arch_label(arch)}")
        res = run_audit(cfg, show_progress=not args.no_progress)
        row, curves[arch_label(arch)] = scaling_row(cfg.db_path, res, arch, task)
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("n_parameters", kind="stable")
    out = study_report_dir(args.results, "scaling", get_dataset(args.dataset).name)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "scaling.csv", index=False)
    threshold = cfg.report.risk_threshold
    scaling_plot(curves, table, out / "scaling.png", threshold)
    print()
    print(
        table[["label", "n_parameters", "patients_above_threshold", "share_above_threshold", "lira_auc_mean", "test_auroc_mean"]].to_string(
            index=False
        )
    )
    print(f"\nplot  {out / 'scaling.png'}\ntable {out / 'scaling.csv'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from flows.options import add_run_options

    p = sub.add_parser("scaling", help="one pool per architecture on the same data: risk versus model capacity")
    p.add_argument("dataset")
    p.add_argument("raw_dir", type=Path, nargs="?", default=None, help="raw data (default: a synthetic cohort of the dataset's layout)")
    p.add_argument("--archs", required=True, help="comma-separated architectures, options after colons: mlp:width=16:depth=1,tabresnet")
    p.add_argument("--patients", type=int, default=1000, help="synthetic cohort size when no raw_dir is given")
    add_run_options(p, models_default=None)
    p.set_defaults(func=cmd_scaling)

"""`medaudit scaling`: one pool per architecture on the same snapshot, risk versus capacity (design D17)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
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


def parameter_count(arch: dict[str, Any], task: Any) -> int:
    from models import build_model

    model = build_model(arch["name"], task.input_shape, task.n_outputs, task.modality, **arch["params"])
    return int(sum(p.numel() for p in model.parameters()))


def scaling_plot(curves: dict[str, np.ndarray], perf: pd.DataFrame, path: Path, threshold: float) -> Path:
    """Patient-risk survival per architecture (left) next to diagnostic performance (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.risk.survival import survival_curve

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    for label, risk in curves.items():
        sc = survival_curve(risk)
        line = ax.step(sc["x"], sc["sf"], where="post", label=f"{label} ({(risk >= threshold).sum()} ≥ {threshold})")[0]
        ax.fill_between(sc["x"], sc["lo"].clip(lower=1e-6), sc["hi"], step="post", alpha=0.15, color=line.get_color())
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5 / max(max((len(r) for r in curves.values()), default=1), 1))
    ax.set_xlim(0.475, 1.0)
    ax.set_xlabel("patient risk (max record AUC)")
    ax.set_ylabel("share of patients with risk ≥ x")
    ax.legend(fontsize=8)
    ax.set_title("Risk versus model capacity")
    bx.bar(perf["label"], perf["test_auroc_mean"], yerr=perf["test_auroc_std"].fillna(0), color="tab:green", alpha=0.8)
    bx.set_ylabel("test AUROC (mean ± std over models)")
    bx.tick_params(axis="x", rotation=30, labelsize=7)
    lo = float(np.nanmin(perf["test_auroc_mean"])) if perf["test_auroc_mean"].notna().any() else 0.5
    bx.set_ylim(max(0.0, lo - 0.1), 1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cmd_scaling(args: argparse.Namespace) -> int:
    from flows.audit import run_audit
    from flows.options import build_config, parse_options
    from tasks.datasets import get_dataset
    from tasks.errors import ConfigError
    from tasks.storage.queries import pool_patient_risks, pool_test_auroc
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
        label = arch["name"] + "".join(f" {k}={v}" for k, v in arch["params"].items())
        print(f"== {label}")
        res = run_audit(cfg, show_progress=not args.no_progress)
        db = cfg.db_path
        pool = res["pool_key"]
        risk = pool_patient_risks(db, pool)["risk"].to_numpy(dtype=float)
        perf = pool_test_auroc(db, pool)
        curves[label] = risk
        h = res["headline"]
        rows.append(
            {
                "label": label,
                "architecture": arch["name"],
                "params": json.dumps(arch["params"]),
                "n_parameters": parameter_count(arch, task),
                "pool_key": pool,
                "n_models": h["n_models"],
                "patients_above_threshold": h["n_patients_above_threshold"],
                "share_above_threshold": h["share_patients_above_threshold"],
                "lira_auc_mean": h["lira_auc_mean"],
                "test_auroc_mean": perf["m"][0],
                "test_auroc_std": perf["s"][0],
            }
        )
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

"""`medaudit dp-sweep`: one DP-SGD pool per (epsilon, unit) on the same snapshot; bound versus empirical risk (design D17).

Every pool is audited by flows.audit.run_audit (stored models are reused, only missing ones are
trained). Per pool the table puts the accounted privacy (read back from ``pool_models.train_info``),
the theoretical AUC bound it implies (tasks/risk/dp_bounds.py) and the empirical risk side by side.
``inf`` is the non-private pool: trained once, shared by every unit's curve.

The bound holds for every record's true AUC. The audit only *estimates* record AUCs, and the maximum
over many noisy estimates is biased upwards, so a row is flagged only when the observed maximum record
AUC exceeds what the estimator itself produces when every record sits exactly at the bound: the 95th
percentile of the maximum over a parametric simulation (binormal IN/OUT scores at the bound's
separation, the pool's IN/OUT model counts per record, the audit's own estimator). For record-level
DP only records of single-record patients are compared: a patient's records enter a model together,
so for a patient with k records record-level DP gives only the group guarantee k·epsilon.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.results_layout import demo_data_dir, study_report_dir

UNITS = ("record", "patient")
NO_DP = "none"  # the unit column of the non-private (epsilon = inf) pool
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


def max_auc_noise_limit(
    bound: float, n_in: np.ndarray, n_out: np.ndarray, *, min_per_side: int = 2, level: float = 0.95, seed: int = 0
) -> float:
    """The ``level`` quantile of the largest *estimated* record AUC when every record's true AUC is ``bound``.

    Records r = 0..R-1 have n_in[r] IN and n_out[r] OUT models; scores are binormal with unit
    variances and separation sqrt(2)·Phi^-1(bound) (AUC = bound) and go through the audit's own
    estimator (tasks/attacks/record_auc.py). Simulations: as many as fit 2e7 score draws, 20 to 200.
    Returns 1.0 for a bound of 1 (nothing can exceed it) and NaN without records.
    """
    from scipy.special import ndtri

    from tasks.attacks.record_auc import record_statistics

    n_in = np.asarray(n_in, dtype=np.int64)
    n_out = np.asarray(n_out, dtype=np.int64)
    if not np.isfinite(bound) or bound >= 1.0:
        return 1.0
    if len(n_in) == 0:
        return float("nan")
    sep = math.sqrt(2.0) * float(ndtri(max(bound, 0.5)))
    m = int((n_in + n_out).max())
    col = np.arange(m)[:, None]
    in_mask = col < n_in[None, :]
    valid = col < (n_in + n_out)[None, :]
    n_sims = int(np.clip(2e7 // (m * len(n_in)), 20, 200))
    rng = np.random.default_rng(seed)
    maxima = np.empty(n_sims)
    for i in range(n_sims):
        scores = rng.standard_normal(in_mask.shape) + sep * in_mask
        scores[~valid] = np.nan
        auc = record_statistics(scores, in_mask, min_per_side)["auc"].to_numpy()
        maxima[i] = np.nanmax(auc) if np.isfinite(auc).any() else np.nan
    return float(np.nanquantile(maxima, level))


def _dp_config(base_cfg: Any, epsilon: float, unit: str | None, clip_norm: float | None) -> Any:
    """``base_cfg`` with the DP fields of its recipe set for one sweep point (epsilon inf: DP off)."""
    from tasks.config import AuditConfig

    data = base_cfg.model_dump(mode="json")
    recipe = data["pool"]["recipe"]
    if math.isinf(epsilon):  # the plain pool: unit and clip norm stay as configured, so its key is the usual one
        recipe["dp_epsilon"] = None
    else:
        recipe.update({"dp_epsilon": epsilon, "dp_unit": unit})
        if clip_norm is not None:
            recipe["dp_clip_norm"] = clip_norm
    return AuditConfig.model_validate(data)


def sweep_row(cfg: Any, res: dict[str, Any], unit: str, epsilon: float) -> dict[str, Any]:
    """One table row: accounting from pool_models.train_info (the audited models), empirical risk from the audit's views."""
    from tasks.storage.queries import pool_dp_accounting, pool_scored_records

    acc = pool_dp_accounting(cfg.db_path, res["pool_key"], cfg.pool.n_models)
    rec = pool_scored_records(cfg.db_path, res["pool_key"])
    h = res["headline"]
    dp_pool = not math.isinf(epsilon)
    bound = float(acc["bound"]) if dp_pool else 1.0
    # the records whose membership the guarantee covers: all for patient-level DP; for record-level
    # DP those of single-record patients (k records of one patient: only k·epsilon by group privacy)
    covered = rec if unit != "record" else rec[rec["n_records"] == 1]
    limit = (
        max_auc_noise_limit(
            float(acc["bound_max"]),
            covered["n_in"].to_numpy(),
            covered["n_out"].to_numpy(),
            min_per_side=cfg.attack.min_models_per_side,
        )
        if dp_pool
        else float("nan")
    )
    max_covered = float(covered["risk"].max()) if len(covered) else float("nan")
    risk = rec["risk"].to_numpy(dtype=float)
    return {
        "unit": unit,
        "target_epsilon": epsilon,
        "epsilon_median": float(acc["eps_med"]) if dp_pool else math.inf,
        "epsilon_min": float(acc["eps_min"]) if dp_pool else math.inf,
        "epsilon_max": float(acc["eps_max"]) if dp_pool else math.inf,
        "delta": acc["delta"],
        "noise_multiplier": acc["sigma"],
        "sampling_rate": acc["q"],
        "steps": acc["steps"],
        "n_units": acc["n_units"],
        "auc_bound": bound,
        "lira_auc_mean": h.get("lira_auc_mean"),
        "max_record_auc": float(risk.max()) if len(risk) else float("nan"),
        "p99_record_auc": float(np.quantile(risk, 0.99)) if len(risk) else float("nan"),
        "max_covered_record_auc": max_covered,
        "bound_noise_limit": limit,
        # strictly above the limit by more than float noise: with few models both are 1.0 (up to 1e-9)
        "exceeds_bound": bool(dp_pool and np.isfinite(limit) and max_covered > limit + 1e-6),
        "patients_above_threshold": h["n_patients_above_threshold"],
        "share_above_threshold": h["share_patients_above_threshold"],
        "test_auroc_mean": acc["auroc_mean"],
        "test_auroc_std": acc["auroc_std"],
        "n_models": int(acc["n_models"]),
        "pool_key": res["pool_key"],
    }


def _x_positions(epsilons: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Plot positions on a log axis: finite epsilons as they are, inf a decade right of the largest."""
    finite = epsilons[np.isfinite(epsilons)]
    x_inf = float(finite.max() * 10.0) if len(finite) else 1.0
    return np.where(np.isfinite(epsilons), epsilons, x_inf), (x_inf if np.isinf(epsilons).any() else None)


def dp_sweep_plot(table: pd.DataFrame, path: Path) -> Path:
    """Empirical risk and the theoretical bound versus epsilon (left), test AUROC versus epsilon (right).

    Log x; the non-private pool (epsilon inf) sits right of a broken axis, tick "∞", not joined to the
    DP curves by a line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps_all = np.sort(table["target_epsilon"].astype(float).unique())
    xs, x_inf = _x_positions(eps_all)
    pos = dict(zip(eps_all, xs, strict=True))
    colours = {"record": "tab:blue", "patient": "tab:red", NO_DP: "0.3"}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for unit in [*UNITS, NO_DP]:
        rows = table[table["unit"] == unit].sort_values("target_epsilon")
        if rows.empty:
            continue
        x = rows["target_epsilon"].astype(float).map(pos).to_numpy()
        c = colours[unit]
        name = "no DP" if unit == NO_DP else f"{unit}-level"
        ax.plot(x, rows["lira_auc_mean"].astype(float), "o-", color=c, label=f"{name}: LiRA AUC")
        ax.plot(x, rows["p99_record_auc"].astype(float), "s:", color=c, label=f"{name}: 99th pct record AUC")
        ax.plot(x, rows["auc_bound"].astype(float), "_--", ms=14, color=c, alpha=0.8, label=f"{name}: theoretical bound")
        std = rows["test_auroc_std"].astype(float).fillna(0.0)
        bx.errorbar(x, rows["test_auroc_mean"].astype(float), yerr=std, fmt="o-", color=c, capsize=3, label=name)
    for a in (ax, bx):
        a.set_xscale("log")
        a.set_xticks(xs, ["∞" if np.isinf(e) else f"{e:g}" for e in eps_all])
        a.minorticks_off()
        a.set_xlabel("target ε")
        if x_inf is not None and len(xs) > 1:  # broken axis between the largest finite epsilon and inf
            x_break = math.sqrt(x_inf * float(np.max(xs[np.isfinite(eps_all)])))
            a.axvline(x_break, color="0.75", lw=0.8, ls=(0, (2, 2)))
            a.text(x_break, 0, "//", transform=a.get_xaxis_transform(), ha="center", va="center", fontsize=11, backgroundcolor="white")
        a.margins(x=0.08)
    lowest = np.nanmin(table[["lira_auc_mean", "p99_record_auc"]].astype(float).to_numpy(), initial=0.5)
    ax.set_ylim(min(0.48, lowest - 0.02), 1.02)
    ax.set_ylabel("membership AUC")
    ax.set_title("Empirical risk versus the DP bound")
    ax.legend(fontsize=7, loc="best")
    bx.set_ylabel("test AUROC (mean ± std over models)")
    bx.set_title("Diagnostic performance")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
        cfg = _dp_config(base_cfg, eps, unit, args.clip_norm)
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

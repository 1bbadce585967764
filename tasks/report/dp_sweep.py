"""The plot of `medaudit dp-sweep`: empirical risk and the DP bound versus epsilon, and the models' test AUROC."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.audit.dp_sweep import NO_DP, UNITS


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

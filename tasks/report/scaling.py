"""The plot of `medaudit scaling`: patient risk per architecture next to each pool's test AUROC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.risk.survival import survival_curve


def scaling_plot(curves: dict[str, np.ndarray], perf: pd.DataFrame, path: Path, threshold: float) -> Path:
    """Patient-risk survival per architecture (left) next to diagnostic performance (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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

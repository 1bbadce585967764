"""Why one patient is exposed: the text and the IN/OUT score plot of `medaudit explain` (no DuckDB here).

Input is :meth:`tasks.storage.store.AuditStore.patient_explanation`'s dict. Only the pseudonymous patient key,
record indices and ``source_file`` + ``source_row`` locate records; nothing else that could re-identify
the patient is printed or drawn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tasks.risk.exposure_factors import rarity_bins

MAX_PLOTTED_RECORDS = 6


def separation(records: pd.DataFrame) -> np.ndarray:
    """IN-OUT separation of each record in pooled SDs: (mu_in - mu_out) / sqrt((sd_in^2 + sd_out^2) / 2); (n,)."""
    pooled = np.sqrt((records["sd_in"].to_numpy(float) ** 2 + records["sd_out"].to_numpy(float) ** 2) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (records["mu_in"].to_numpy(float) - records["mu_out"].to_numpy(float)) / pooled


def _f(v: Any, fmt: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def record_attributes(attributes: pd.DataFrame) -> dict[int, str]:
    """record_idx -> 'attr=value, ...' of its subgroup attributes."""
    out = {}
    for k, g in attributes.groupby("record_idx"):
        out[int(k)] = ", ".join(f"{a}={v}" for a, v in zip(g["attribute"], g["value"], strict=True))
    return out


def explanation_text(ex: dict[str, Any], plot: Path | None) -> str:
    """The explanation as printed: the patient's standing, then one block per record (most exposed first)."""
    a, p, recs = ex["audit"], ex["patient"], ex["records"]
    attrs = p.get("attributes") or {}
    attrs = dict(attrs) if not isinstance(attrs, list) else {k: v for k, v in attrs}
    lines = [
        f"patient {p['patient_key']} · audit {a['audit_id']} ({a['dataset']}, pool {a['pool_key']}, {a['n_models']} models)",
        f"risk (highest record AUC) {_f(p['risk_max'], '.3f')}: rank {p['rank']} of {p['n_patients']} patients; "
        f"{p['n_records']} training records, {p['n_scored']} scored",
        "attributes: " + (", ".join(f"{k}={v}" for k, v in sorted(attrs.items())) or "none"),
        "",
        "rarity = training prevalence of the record's rarest label; atypicality = how badly the models that never saw the",
        "record fit it, in SDs of the records with the same labels (percentile among all training records);",
        "separation = how far the IN models' scores sit above the OUT models', in pooled SDs (what the attack sees).",
    ]
    per_record = record_attributes(ex["attributes"])
    bins = rarity_bins(recs["label_prevalence"].to_numpy(float))
    sep = separation(recs)
    for i, r in enumerate(recs.itertuples(index=False)):
        lines += [
            "",
            f"record {r.record_idx} ({r.source_file}, row {r.source_row}, {r.split}): labels {r.label_set}",
            f"  risk {_f(r.risk, '.3f')} ± {_f(r.auc_se, '.3f')} (empirical AUC {_f(r.auc_empirical, '.3f')})"
            + (f" [flag: {r.flag}]" if r.flag else ""),
            f"  rarity: rarest label prevalence {_f(r.label_prevalence, '.1%')} (bin {bins[i]}); "
            f"atypicality {_f(r.atypicality, '+.2f')} SD ({_f(r.atypicality_percentile, '.0%')} of records are less atypical)",
            f"  IN models (n={r.n_in}): mean score {_f(r.mu_in, '.2f')} sd {_f(r.sd_in, '.2f')}; "
            f"OUT models (n={r.n_out}): mean {_f(r.mu_out, '.2f')} sd {_f(r.sd_out, '.2f')}; separation {_f(sep[i], '.1f')} SD",
            f"  attributes: {per_record.get(int(r.record_idx), 'none')}",
        ]
    if plot is not None:
        lines += ["", f"IN/OUT score plot (owner-only): {plot}"]
    return "\n".join(lines)


def score_plot(ex: dict[str, Any], path: Path) -> Path:
    """Per-model scores of the patient's most exposed records, IN vs OUT models; written owner-only (0600)."""
    recs = ex["records"].head(MAX_PLOTTED_RECORDS)
    scores = ex["scores"]
    n = max(len(recs), 1)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.2), squeeze=False, sharey=False)
    rng = np.random.default_rng(0)
    for ax, r in zip(axes[0], recs.itertuples(index=False), strict=False):
        s = scores[scores["record_idx"] == r.record_idx]
        for x, (side, colour) in enumerate(((True, "tab:red"), (False, "tab:blue"))):
            v = s.loc[s["is_in"] == side, "score"].dropna().to_numpy()
            ax.scatter(x + rng.uniform(-0.15, 0.15, v.size), v, s=10, color=colour, alpha=0.7)
            if v.size:
                ax.hlines(v.mean(), x - 0.3, x + 0.3, color="black", lw=1.5)
        ax.set_xticks([0, 1], ["IN", "OUT"])
        ax.set_title(f"record {r.record_idx}\nrisk {_f(r.risk, '.2f')}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("model score (view mean)")
    fig.suptitle(f"patient {ex['patient']['patient_key']}: scores of models trained with (IN) / without (OUT) them", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    os.chmod(path, 0o600)
    plt.close(fig)
    return path

"""Plots, CSV exports and the self-contained HTML report of one audit (design D16, D21).

Exports suppress small cells (fewer than ``min_cell`` units) and never contain raw patient ids.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tasks.audit.pool_audit import SE_REFERENCE, AuditResult
from tasks.report.tables import NULL, SUBGROUP_LEGEND, display_subgroups, opening_paragraph, risk_over_time_plot
from tasks.risk.subgroup import MISSING_GROUP, suppress_small_cells
from tasks.risk.survival import survival_curve
from tasks.storage.sealed import make_private, make_private_dir


def _f(value: object, fmt: str = ".3f") -> str:
    """A headline number, or 'n/a' where it is missing (None / NaN: e.g. no target models)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, fmt)


def headline_rows(h: dict) -> list[tuple[str, str]]:
    """The headline numbers as (label, value) rows, shared by the CLI, the artifact and the report."""
    pct = 100 * h["share_patients_above_threshold"]
    tpr3, tpr2 = h.get("lira_tpr_at_0.001"), h.get("lira_tpr_at_0.01")
    lira = f"{_f(h.get('lira_auc_mean'))} ± {_f(h.get('lira_auc_std'))} (TPR@1e-3 FPR {_f(tpr3, '.4f')}, TPR@1e-2 FPR {_f(tpr2, '.4f')})"
    at_risk = f"{h['n_patients_above_threshold']} of {h['n_patients']} ({pct:.1f}%) with risk >= {h['risk_threshold']}"
    extra: list[tuple[str, str]] = []
    if h.get("n_patients_at_risk") is not None:  # audits since the swap null: controlled, raw and chance side by side
        share = 100 * h["n_patients_at_risk"] / max(h.get("n_patients_scored") or 1, 1)
        at_risk = (
            f"{h['n_patients_at_risk']} of {h['n_patients']} ({share:.1f}%) with risk >= {h['risk_threshold']} and FDR q <= {h['fdr']:g}"
        )
        extra.append(
            (
                "flagged before FDR",
                f"{h['n_patients_above_threshold']} with risk >= {h['risk_threshold']}; chance alone would flag about "
                f"{_f(h.get('n_patients_expected_by_chance'), '.1f')}",
            )
        )
    rows = [
        ("aggregate LiRA AUC", lira),
        ("patients at risk", at_risk),
        *extra,
        ("highest record AUC", f"{_f(h.get('max_record_auc'))} (median {_f(h.get('median_record_auc'))})"),
        ("degenerate records", f"{h['n_degenerate_records']} flagged, never turned into numbers"),
    ]
    if h.get("evidence") is not None:
        rows.append(("models enough?", f"{h['evidence']} evidence: {h.get('evidence_reason', '')}"))
    elif h.get("se_median_at_pool_size") is not None:
        verdict = "pool big enough" if h.get("pool_big_enough") else "more models needed"
        rows.append(
            (
                "models enough?",
                f"median SE of the top-1% records {_f(h['se_median_at_pool_size'])} at {h.get('se_n_models')} models "
                f"({verdict}: reference {SE_REFERENCE})",
            )
        )
    return rows + exposure_rows(h)


def exposure_rows(h: dict) -> list[tuple[str, str]]:
    """Rarity and atypicality among the exposed patients, each against what chance alone would give."""
    rows = []
    if h.get("atypical_decile_exposed") is not None:
        share, base = (h.get(f"atypical_decile_share_{k}") for k in ("exposed", "all"))
        rows.append(
            (
                "atypical decile",
                f"{h['atypical_decile_exposed']} (expected by chance {_f(h.get('atypical_decile_expected'), '.1f')}; "
                f"{_f(share, '.0%')} of the exposed vs {_f(base, '.0%')} of all; "
                f"one-sided Fisher p {_f(h.get('atypical_decile_p'), '.2g')})",
            )
        )
    if h.get("rare_patients_exposed") is not None:
        rows.append(
            (
                "rare labels (<5%)",
                f"{h['rare_patients_exposed']} (expected by chance {_f(h.get('rare_patients_expected'), '.1f')}; "
                f"one-sided Fisher p {_f(h.get('rare_patients_p'), '.2g')})",
            )
        )
    if h.get("atypicality_spearman_rho") is not None:
        rows.append(
            (
                "risk ~ atypicality",
                f"Spearman rho {_f(h['atypicality_spearman_rho'], '.2f')} "
                f"[{_f(h.get('atypicality_spearman_lo'), '.2f')}, {_f(h.get('atypicality_spearman_hi'), '.2f')}] "
                f"(p {_f(h.get('atypicality_spearman_p'), '.2g')})",
            )
        )
    return rows


def top_patients_table(result: AuditResult, n: int = 20) -> pd.DataFrame:
    """The ``n`` most exposed patients with why: their labels, and the rarity (rarest label's training
    prevalence) and atypicality (standardised within its labels) of their most exposed record."""
    top = result.patient_stats.sort_values("risk_max", ascending=False).head(n)
    if result.patient_factors.empty:
        return top
    return top.merge(result.patient_factors, on="patient_key", how="left", validate="one_to_one")


def chance_sentence(h: dict) -> str:
    """One sentence: how many of the flagged patients chance alone would give, and how many remain at risk."""
    if h.get("n_patients_expected_by_chance") is None:
        return ""
    return (
        f"Chance alone (the pool's own IN/OUT swap null, {h.get('null_swaps')} swaps) would put about "
        f"{h['n_patients_expected_by_chance']:.1f} of the {h['n_patients_above_threshold']} patients with risk >= {h['risk_threshold']} "
        f"above that threshold; the {100 * h['fdr']:g}% false-discovery-rate rule keeps {h['n_patients_at_risk']}."
    )


def survival_plot(result: AuditResult, path: Path) -> Path:
    """Empirical survival of patient (max) and record risk with 95% bands, log y (paper Fig. 1 style), and the
    same curves under the swap null (dashed: mean over swaps; shaded: 2.5-97.5% of the swaps)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    band = result.survival_null
    for label, level, values, colour in (
        ("patients (max over records)", "patient", result.patient_stats["risk_max"].to_numpy(), "tab:red"),
        ("records", "record", result.record_stats["auc"].to_numpy(), "tab:blue"),
    ):
        sc = survival_curve(values)
        if sc.empty:
            continue
        ax.step(sc["x"], sc["sf"], where="post", color=colour, label=f"{label} (n={np.isfinite(values).sum()})")
        ax.fill_between(sc["x"], sc["lo"].clip(lower=1e-6), sc["hi"], step="post", color=colour, alpha=0.2)
        nb = band[band["level"] == level] if len(band) else band
        if len(nb):
            ax.plot(nb["x"], nb["mean"].clip(lower=1e-6), ls="--", color=colour, lw=1, label=f"{label}: chance alone (swap null)")
            floor = 0.5 / max(int(np.isfinite(values).sum()), 1)  # half a unit: below it the band is "none by chance"
            ax.fill_between(nb["x"], nb["lo"].clip(lower=floor), nb["hi"].clip(lower=floor), color="grey", alpha=0.15, lw=0)
    ax.set_yscale("log")
    ax.set_xlim(0.475, 1.0)
    ax.set_xlabel("membership-inference AUC (risk)")
    ax.set_ylabel("share with risk ≥ x")
    ax.axvline(0.9, ls=":", color="grey")
    ax.legend(fontsize=8)
    ax.set_title("Who is exposed: survival of per-patient and per-record risk")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def subgroup_survival_plot(result: AuditResult, path: Path, min_cell: int) -> Path:
    """Patient-level risk survival (95% bands) per group, one panel per subgroup attribute.

    Only groups with at least ``min_cell`` scored patients are drawn (small cells are suppressed).
    """
    patients = result.patient_stats
    attrs = [c for c in patients.columns if c not in {"patient_key", "n_records", "n_scored", "risk_max", "risk_mean"}]
    n = max(len(attrs), 1)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    risk = patients["risk_max"]
    for ax, attr in zip(axes.ravel(), attrs, strict=False):
        groups = patients.loc[risk.notna(), attr].astype(str).value_counts()
        if (groups >= min_cell).any():  # down to half a patient of the largest group drawn: bands stay readable
            ax.set_ylim(0.5 / groups[groups >= min_cell].max(), 1.5)
        for group in sorted(groups[groups >= min_cell].index):
            values = risk[patients[attr].astype(str) == group].to_numpy()
            sc = survival_curve(values)
            if sc.empty:
                continue
            line = ax.step(sc["x"], sc["sf"], where="post", label=f"{group} (n={np.isfinite(values).sum()})")[0]
            ax.fill_between(sc["x"], sc["lo"].clip(lower=1e-6), sc["hi"], step="post", color=line.get_color(), alpha=0.15)
        ax.set_yscale("log")
        ax.set_xlim(0.475, 1.0)
        ax.axvline(0.9, ls=":", color="grey")
        ax.set_title(str(attr), fontsize=9)
        ax.set_xlabel("patient risk (max record AUC)", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
        else:  # every group of the attribute is a small cell: nothing drawn, say why instead of an empty legend
            ax.text(0.5, 0.5, f"every group < {min_cell} patients (suppressed)", ha="center", fontsize=7, transform=ax.transAxes)
    for ax in axes.ravel()[len(attrs) :]:
        ax.axis("off")
    if not attrs:
        axes[0][0].text(0.5, 0.5, "no subgroup attributes", ha="center", va="center")
    axes[0][0].set_ylabel("share of patients with risk ≥ x")
    fig.suptitle(f"Patient risk survival per group (groups of ≥ {min_cell} patients)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def se_plot(result: AuditResult, path: Path) -> Path:
    """Per-record AUC standard error vs number of models (median, p90-max band) with the 0.05 reference."""
    ab = result.model_count_ablation
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (scope, g), colour in zip(ab.groupby("scope", sort=True), ("tab:blue", "tab:red", "tab:green"), strict=False):
        g = g.sort_values("n_models")
        label = "all records" if scope == "all" else f"{scope} records (by full-pool AUC)"
        ax.plot(g["n_models"], g["se_median"], "o-", color=colour, label=f"{label}: median")
        ax.plot(g["n_models"], g["se_p90"], "s--", color=colour, alpha=0.7, lw=1, label=f"{label}: p90")
        ax.fill_between(g["n_models"].astype(float), g["se_median"], g["se_max"], color=colour, alpha=0.1)
    ax.axhline(SE_REFERENCE, ls=":", color="black", label=f"reference SE {SE_REFERENCE}")
    if ab.empty:
        ax.text(0.5, 0.5, "no records to subsample", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("number of shadow models (half IN, half OUT per record)")
    ax.set_ylabel("Hanley-McNeil SE of the record AUC")
    ax.legend(fontsize=7)
    ax.set_title("How many models? SE of per-record risk vs pool size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def roc_plot(result: AuditResult, path: Path) -> Path:
    """Log-log ROC curves (mean ± std over target models) of the aggregate attacks."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    roc = result.attack_roc
    summ = result.attack_summary
    groups = roc.groupby(["attack", "level"], sort=True) if not roc.empty else []
    for (attack, level), g in groups:
        if level != "record" and attack != "lira_online":
            continue
        row = summ[(summ["attack"] == attack) & (summ["level"] == level)].iloc[0]
        ax.plot(g["fpr"], g["tpr_mean"], label=f"{attack} [{level}] AUC {row['auc_mean']:.3f}±{row['auc_std']:.3f}")
        ax.fill_between(g["fpr"], (g["tpr_mean"] - g["tpr_std"]).clip(lower=1e-6), (g["tpr_mean"] + g["tpr_std"]).clip(upper=1), alpha=0.15)
    ax.plot([1e-5, 1], [1e-5, 1], ls="--", color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_ylim(1e-5, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Aggregate attacks on held-out target models")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def subgroup_plot(result: AuditResult, path: Path, min_cell: int, threshold: float) -> Path:
    """Share of patients with risk ≥ threshold per group (Wilson 95% CI); small cells are left out."""
    sub = result.subgroups
    sub = sub[(sub["level"] == "patient") & ~sub["attribute"].str.contains("×") & (sub["units"] >= min_cell)]
    attrs = list(dict.fromkeys(sub["attribute"]))
    fig, axes = plt.subplots(1, max(len(attrs), 1), figsize=(2.6 * max(len(attrs), 1), 3.6), squeeze=False, sharey=True)
    for ax, attr in zip(axes[0], attrs, strict=False):
        g = sub[sub["attribute"] == attr]
        y = g["share_above"].to_numpy()
        # Wilson bounds can sit a rounding error inside the point estimate; matplotlib refuses negatives.
        err = np.nan_to_num(np.clip(np.vstack([y - g["share_lo"].to_numpy(), g["share_hi"].to_numpy() - y]), 0, None))
        ax.bar(g["group"].astype(str), y, yerr=err, capsize=3, color="tab:purple", alpha=0.8)
        ax.set_title(attr, fontsize=9)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    axes[0][0].set_ylabel(f"share of patients with risk ≥ {threshold}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def export_subgroups(result: AuditResult, min_cell: int) -> pd.DataFrame:
    return suppress_small_cells(result.subgroups, min_cell)


def png_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def table_html(df: pd.DataFrame, max_rows: int | None = None, csv_name: str | None = None) -> str:
    """A table with one null style; every row, or the first ``max_rows`` with a "showing N of M" line linking the CSV."""
    shown = df if max_rows is None else df.head(max_rows)
    shown = shown.replace({MISSING_GROUP: "(missing)"})
    table = shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep=NULL, border=0, classes="t")
    note = ""
    if len(shown) < len(df):
        link = f' (all of them in <a href="{html.escape(csv_name)}">{html.escape(csv_name)}</a>)' if csv_name else ""
        note = f'<p class="n">showing {len(shown)} of {len(df)} rows{link}</p>'
    return f'<div class="w">{table}</div>{note}'


def write_report(
    result: AuditResult,
    out_dir: Path,
    *,
    dataset: str,
    pool_key: str,
    audit_id: str,
    min_cell: int,
    threshold: float,
    history: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write PNG plots, CSV tables and report.html to ``out_dir`` (owner-only); return their paths.

    history: the finished audits of this dataset so far (see ``risk_over_time_plot``), this one included;
    with two or more, a risk-over-time plot is added."""
    for folder in (out_dir.parent.parent, out_dir.parent, out_dir):  # reports/<dataset>/<audit>: medaudit's own folders
        make_private_dir(folder)
    files = {
        "survival_png": survival_plot(result, out_dir / "risk_survival.png"),
        "roc_png": roc_plot(result, out_dir / "attack_roc.png"),
        "subgroups_png": subgroup_plot(result, out_dir / "subgroup_risk.png", min_cell, threshold),
        "subgroup_survival_png": subgroup_survival_plot(result, out_dir / "subgroup_survival.png", min_cell),
        "se_png": se_plot(result, out_dir / "se_vs_models.png"),
    }
    subgroups = export_subgroups(result, min_cell)
    key_first = ["patient_key", "risk_max", "risk_mean", "n_records", "n_scored"]
    patients = top_patients_table(result, n=len(result.patient_stats))
    patients = patients[[c for c in key_first if c in patients] + [c for c in patients if c not in key_first]]
    tables = {
        "subgroup_csv": (subgroups, "subgroup_risk.csv"),
        "attack_csv": (result.attack_summary, "attack_summary.csv"),
        "patient_csv": (patients, "patient_risk.csv"),
        "record_csv": (result.record_stats.sort_values("auc", ascending=False), "record_risk.csv"),
        "se_csv": (result.model_count_ablation, "se_vs_models.csv"),
    }
    for key, (frame, name) in tables.items():
        frame.to_csv(out_dir / name, index=False)
        files[key] = out_dir / name
    h = result.headline
    if history is not None and len(history) >= 2:
        files["history_png"] = risk_over_time_plot(history, out_dir / "risk_over_time.png", threshold)
    over_time = (
        f'<h2>Risk over time</h2><img src="data:image/png;base64,{png_b64(files["history_png"])}">' if "history_png" in files else ""
    )
    shown_groups = display_subgroups(subgroups, min_cell)
    legend = SUBGROUP_LEGEND.format(threshold=threshold, top=100 * result.headline.get("top_fraction", 0.01), k=min_cell)
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>medaudit — {html.escape(dataset)}</title>
<style>body{{font-family:sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}}
.t{{border-collapse:collapse;font-size:12px}} .t td,.t th{{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}}
.t td:first-child,.t td:nth-child(2){{text-align:left}} .w{{max-width:100%;overflow-x:auto}} img{{max-width:100%}}
.k{{display:inline-block;margin:0 1.5em 1em 0}} .k b{{font-size:1.6em;display:block}} .warn{{background:#fff3cd;padding:.5em}}
.lead{{font-size:1.05em;line-height:1.5}} .n,.legend{{font-size:12px;color:#555}}</style></head><body>
<h1>Patient-level privacy audit: {html.escape(dataset)}</h1>
<p>audit {html.escape(audit_id)} · pool {html.escape(pool_key)} · {h["n_models"]} shadow models ({h["n_targets"]} held-out targets) ·
{h["n_patients"]} patients · {h["n_records"]} records</p>
<p class="lead">{html.escape(opening_paragraph(dataset, h, subgroups))}</p>
<p class="warn">Sensitive: patient keys are pseudonymous but linkable by the data steward. Groups with fewer than {min_cell}
patients are suppressed.</p>
{"".join(f'<div class="k">{html.escape(k)}<b>{html.escape(v)}</b></div>' for k, v in headline_rows(h))}
<p>{html.escape(chance_sentence(h))}</p>
<h2>Risk survival</h2><img src="data:image/png;base64,{png_b64(files["survival_png"])}">
<h2>Subgroups</h2><img src="data:image/png;base64,{png_b64(files["subgroups_png"])}">
<img src="data:image/png;base64,{png_b64(files["subgroup_survival_png"])}">
{table_html(shown_groups)}<p class="legend">{html.escape(legend)}</p>
<h2>Aggregate attacks</h2><img src="data:image/png;base64,{png_b64(files["roc_png"])}">
{table_html(result.attack_summary)}
<h2>How many models are needed?</h2><img src="data:image/png;base64,{png_b64(files["se_png"])}">
<p>{html.escape(evidence_sentence(h))}</p>
<p>Each record's AUC recomputed from random subsets of its models (half IN, half OUT); the paper's reference is a
median Hanley-McNeil SE of the top-1% records of at most {SE_REFERENCE}.</p>
{table_html(result.model_count_ablation)}
{over_time}
<h2>Who is exposed and why</h2>
<p>Exposed: {html.escape(str(result.exposure_tests["exposed"].iloc[0]) if not result.exposure_tests.empty else "n/a")}.
Rarity = training prevalence of the rarest label; atypicality = how badly the models that never saw a record fit it,
standardised within its labels (a patient: their rarest / most atypical record). Each row tests whether the set is
over-represented among the exposed (one-sided Fisher exact; expected = exposed × share of all units in the set).</p>
{table_html(result.exposure_tests)}
<h2>Most exposed patients (pseudonymous keys)</h2>{table_html(patients, max_rows=20, csv_name="patient_risk.csv")}
<p>Run <code>medaudit explain PATIENT_KEY</code> for one patient's records and IN/OUT score distributions.</p>
</body></html>"""
    files["report_html"] = out_dir / "report.html"
    files["report_html"].write_text(body)
    for path in files.values():  # sealed by default (tasks/storage/sealed.py), whatever the process umask
        make_private(path)
    return files


def evidence_sentence(h: dict) -> str:
    """The evidence verdict: share of flagged patients that are noise, top-record interval width, models needed."""
    if h.get("evidence") is None:
        return ""
    width = _f(h.get("top_interval_width"), ".2f")
    needed = h.get("n_models_needed")
    more = f"about {needed} models would meet both targets (projected)" if needed else "more than 1024 models would be needed"
    return (
        f"Evidence {h['evidence']} at {h['n_models']} models: an expected {100 * h.get('noise_share', 0.0):.0f}% of the raw flagged "
        f"patients are noise, and the 95% interval of the top 1% records' risk ({h.get('interval_method', '')}) is {width} wide; "
        f"{more}."
    )


def figure_b64(path: Path) -> str:
    """PNG as a base64 data URI, for Prefect markdown artifacts."""
    buf = io.BytesIO(path.read_bytes())
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

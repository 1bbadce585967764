"""Plot, CSVs and HTML of one existing model's audit (``medaudit audit-model``); owner-only folder."""

from __future__ import annotations

import html
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tasks.audit.model_audit import ModelAuditResult
from tasks.report.pool_audit import png_b64, table_html
from tasks.risk.roc import roc_curve
from tasks.risk.survival import survival_curve


def _calibration_text(h: dict) -> str:
    cal = h.get("calibration") or []
    parts = [f">= {c['level']:g}: {100 * c['share']:.1f}% (uniform {100 * c['nominal']:.0f}%)" for c in cal]
    text = "non-member patients at risk " + ", ".join(parts)
    if h.get("calibration_far_from_uniform"):
        text += (
            " — far from uniform: the references do not score like this model, so the count at the threshold alone means "
            "little; read it against the non-member rate (excess, q-values)"
        )
    return text


def model_audit_rows(h: dict) -> list[tuple[str, str]]:
    """Headline of a target audit as (label, value) rows (CLI, artifact, HTML)."""
    t = h["risk_threshold"]
    chance = h["expected_by_chance"]
    rows = []
    if "sanity_metric" in h:
        forced = " — BELOW THE FLOOR, audited anyway (--force): the verdicts below may mean nothing" if h.get("sanity_forced") else ""
        rows.append(
            (
                "model task metric",
                f"{h['sanity_metric']} {h['sanity_non_members']:.3f} on its non-member records, {h['sanity_members']:.3f} on its "
                f"members (floor {h['sanity_floor']:.3f}; logistic regression on the same members: {h.get('sanity_baseline', np.nan):.3f})"
                f"{forced}",
            )
        )
    if h.get("input_contract"):
        rows.append(("inputs", h["input_contract"]))
    rows.append(
        (
            "offline LiRA AUC",
            f"{h['lira_offline_auc']:.3f} (TPR@1e-3 FPR {h['lira_offline_tpr_at_1e-3']:.4f}; records, members vs non-members)",
        )
    )
    ci = h.get("excess_patients_at_risk_ci")
    excess = f"; excess {h['excess_patients_at_risk']:+.1f}, 95% CI [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else ""
    rows.append(
        (
            "patients at risk",
            f"{h['n_member_patients_at_risk']} of {h['n_member_patients']} member patients with risk >= {t} "
            f"(chance: {chance:.1f}, from {h['n_non_member_patients']} non-member patients{excess})",
        )
    )
    if "n_member_patients_significant" in h:
        rows.append(
            (
                "above non-members",
                f"{h['n_member_patients_significant']} member patients above the non-member null at FDR {h['fdr']:g} "
                f"(BH q-values of empirical p-values); members vs non-members: Mann-Whitney p = {h['members_above_non_members_p']:.2g}, "
                f"Fisher p at {t} = {h['fisher_p']:.2g}",
            )
        )
    if "calibration" in h:
        rows.append(("calibration check", _calibration_text(h)))
    rows.append(("highest member risk", f"{h['max_member_risk']:.4f}"))
    rows.append(
        ("references", f"{h['n_references']} models, median {h['median_out_references']:.0f} OUT per record, {h['variance']} variance")
    )
    m = h.get("matched_references")
    if m:
        rows.append(
            (
                "matched references",
                f"recipe {m['recipe'].get('optimizer', 'sgd')}, lr {m['recipe']['learning_rate']:g}, {m['recipe']['epochs']} epochs: "
                f"{m['n_member_patients_at_risk']} at risk (chance {m['expected_by_chance']:.1f}), {m['n_member_patients_significant']} "
                f"significant, LiRA AUC {m['lira_offline_auc']:.3f} — default references: {h['n_member_patients_at_risk']} "
                f"(chance {chance:.1f}), {h.get('n_member_patients_significant')} significant, AUC {h['lira_offline_auc']:.3f}",
            )
        )
    rows.append(("offline RMIA", h["rmia_note"]))
    if h.get("records_without_logits"):
        rows.append(("records without logits", f"{h['records_without_logits']} of {h['n_records']} (--allow-missing): left out"))
    if h.get("members_excluded_at_ingest"):
        rows.append(
            (
                "members excluded",
                f"{h['members_excluded_at_ingest']} rows of the members file name no accepted patient/record (quarantined at ingest, "
                f"e.g. the cohort filter; file lines {h.get('members_excluded_lines', [])[:10]}): left out",
            )
        )
    return rows


def model_audit_plot(result: ModelAuditResult, path: Path, threshold: float) -> Path:
    """Left: patient-risk survival, members vs non-members (the chance line). Right: record-level ROC, log-log."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    pats = result.patients
    for label, sel, color in (
        ("member patients", pats["member"], "tab:red"),
        ("non-member patients (chance)", ~pats["member"], "tab:gray"),
    ):
        risk = pats.loc[sel, "risk"].to_numpy(dtype=float)
        if np.isfinite(risk).any():
            sc = survival_curve(risk)
            ax.step(sc["x"], sc["sf"], where="post", color=color, label=f"{label}: {(risk >= threshold).sum()} ≥ {threshold}")
            ax.fill_between(sc["x"], sc["lo"].clip(lower=1e-6), sc["hi"], step="post", alpha=0.15, color=color)
    ax.axvline(threshold, ls=":", color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5 / max(len(pats), 1))
    ax.set_xlabel("patient risk (max over records of P(OUT reference scores lower))")
    ax.set_ylabel("share of patients with risk ≥ x")
    ax.set_title("Who does this model expose?")
    ax.legend(fontsize=8)
    rec = result.records
    member = rec["member"].to_numpy()
    for name, col in (("offline LiRA", "lira_offline"), ("offline RMIA", "rmia_offline"), ("LOSS", "score")):
        s = rec[col].to_numpy(dtype=float)
        ok = np.isfinite(s)
        if ok.sum() and 0 < member[ok].sum() < ok.sum():
            fpr, tpr = roc_curve(s[ok], member[ok])
            bx.plot(np.clip(fpr, 1e-5, 1), np.clip(tpr, 1e-5, 1), label=name)
    bx.plot([1e-5, 1], [1e-5, 1], ls="--", color="gray", lw=0.8)
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("false positive rate")
    bx.set_ylabel("true positive rate")
    bx.set_title("Record-level attacks on this model")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_model_audit_report(
    result: ModelAuditResult,
    out_dir: Path,
    *,
    title: str,
    audit_id: str,
    min_cell: int,
    threshold: float,
    headline: dict | None = None,
) -> dict[str, Path]:
    """risk.png, patient_risk.csv, record_risk.csv, attacks.csv, subgroup_risk.csv and report.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)
    files = {"risk_png": model_audit_plot(result, out_dir / "risk.png", threshold)}
    subgroups = result.subgroups
    if not subgroups.empty:
        subgroups = subgroups[~subgroups["suppressed"]]
    tables = {
        "patient_csv": (result.patients.sort_values("risk", ascending=False), "patient_risk.csv"),
        "record_csv": (result.records.sort_values("risk", ascending=False), "record_risk.csv"),
        "attack_csv": (result.attacks, "attacks.csv"),
        "subgroup_csv": (subgroups, "subgroup_risk.csv"),
    }
    for key, (frame, name) in tables.items():
        frame.to_csv(out_dir / name, index=False)
        files[key] = out_dir / name
    rows = model_audit_rows(headline or result.headline)
    top = result.patients[result.patients["member"]].sort_values("risk", ascending=False).head(20)
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>medaudit — {html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} .t{{border-collapse:collapse;font-size:12px}}
.t td,.t th{{padding:2px 6px;border-bottom:1px solid #ddd}} .warn{{background:#fff3cd;padding:.5em}}</style></head><body>
<h1>Privacy audit of an existing model: {html.escape(title)}</h1><p>audit {html.escape(audit_id)}</p>
<p class="warn">Sensitive: patient keys are pseudonymous but linkable by the data steward. Groups with fewer than {min_cell}
patients are suppressed.</p>
<table class="t">{"".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)}</table>
<img src="data:image/png;base64,{png_b64(files["risk_png"])}">
<h2>Attacks</h2>{table_html(result.attacks)}
<h2>Member patients by subgroup</h2>{table_html(subgroups) if not subgroups.empty else "<p>no subgroup attributes</p>"}
<h2>Most exposed member patients (pseudonymous keys)</h2>{table_html(top)}
</body></html>"""
    files["report_html"] = out_dir / "report.html"
    files["report_html"].write_text(body)
    return files


def attacks_frame_for_store(attacks: pd.DataFrame, fprs: list[float]) -> pd.DataFrame:
    """attacks (one row per attack and level, tpr_at_<fpr> columns) -> model_audit_attack_results rows."""
    out = attacks[["attack", "level", "auc", "n_members", "n_non_members"]].copy()
    out["tpr_at_fpr"] = [{float(f): float(r[f"tpr_at_{f:g}"]) for f in fprs} for _, r in attacks.iterrows()]
    return out

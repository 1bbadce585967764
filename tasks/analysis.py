"""From stored scores to risk tables: streams record blocks out of the store into the math (D11).

The math lives in tasks/attacks and tasks/risk (arrays in, arrays out); this module only moves
blocks between the store and those functions and assembles the result frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.attacks import ATTACK_VERSIONS
from tasks.attacks.lira import fit_lira_reference, lira_offline, lira_online
from tasks.attacks.loss import loss_attack
from tasks.attacks.record_auc import record_statistics
from tasks.attacks.rmia import rmia_scores, tune_rmia_a
from tasks.config import AttackConfig, ReportConfig
from tasks.risk.patient import patient_llr, patient_membership, patient_risk
from tasks.risk.roc import log_fpr_grid, summarize_attack
from tasks.risk.subgroup import subgroup_table, suppress_small_cells
from tasks.snapshot import Snapshot
from tasks.storage import AuditStore


@dataclass
class AuditResult:
    """Everything an audit computed, as frames ready for the store and the report."""

    record_stats: pd.DataFrame  # one row per training record
    patient_stats: pd.DataFrame  # one row per training patient
    subgroups: pd.DataFrame  # patient- and record-level subgroup tables
    attack_results: pd.DataFrame  # one row per (attack, level, target model)
    attack_roc: pd.DataFrame  # mean ± std TPR on a log FPR grid per (attack, level)
    attack_summary: pd.DataFrame
    headline: dict[str, Any] = field(default_factory=dict)


def training_patients(records: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(train record_idx (N,), patient order (first appearance, paper §3.1), codes (N,) into it)."""
    train = records[records["split"] == "train"]
    codes, order = pd.factorize(train["patient_key"], sort=False)
    return train["record_idx"].to_numpy(), list(order), codes.astype(np.int64)


def _mode(values: pd.Series) -> str:
    counts = values.value_counts()
    return str(counts[counts == counts.max()].sort_index().index[0])


def analyze_pool(
    store: AuditStore,
    snapshot: Snapshot,
    pool_key: str,
    models: list[int],
    n_targets: int,
    n_views: int,
    attack: AttackConfig,
    report: ReportConfig,
    *,
    block_size: int = 100_000,
    progress: Callable[[int, int], None] | None = None,
) -> AuditResult:
    """Run every record-level statistic and attack over the complete models of a pool."""
    records = snapshot.records
    train_idx, order, codes = training_patients(records)
    n_pat = len(order)
    masks = store.load_masks(pool_key, max(models) + 1)[models]  # (M, P)
    models_arr = np.asarray(models)
    tgt = np.flatnonzero(models_arr < n_targets)
    ref = np.flatnonzero(models_arr >= n_targets)
    n_train = len(train_idx)
    T = len(tgt)
    attacks = {name: np.full((T, n_train), np.nan) for name in ("lira_online", "lira_offline", "lira_online_fixed_var", "loss")}
    membership = np.zeros((T, n_train), dtype=bool)
    stats_parts = []
    done = 0
    for recs, scores in store.score_blocks(pool_key, models, train_idx, n_views, block_size):
        pos = np.searchsorted(train_idx, recs)
        in_mask = masks[:, codes[pos]]
        part = record_statistics(scores, in_mask, attack.min_models_per_side)
        part.insert(0, "record_idx", recs)
        stats_parts.append(part)
        if T:
            reference = fit_lira_reference(scores[ref], in_mask[ref])
            attacks["lira_online"][:, pos] = lira_online(scores[tgt], reference)
            attacks["lira_online_fixed_var"][:, pos] = lira_online(scores[tgt], reference, fix_variance=True)
            attacks["lira_offline"][:, pos] = lira_offline(scores[tgt], reference)
            attacks["loss"][:, pos] = loss_attack(scores[tgt])
            membership[:, pos] = in_mask[tgt]
        done += len(recs)
        if progress:
            progress(done, n_train)
    stats = pd.concat(stats_parts, ignore_index=True)

    if T:
        attacks.update(_rmia(store, records, pool_key, models, tgt, ref, masks, train_idx, codes, n_views))

    # ---- patients
    patients = patient_risk(stats["auc"].to_numpy(), codes, n_pat)
    patients.insert(0, "patient_key", order)
    train_rec = records.set_index("record_idx").loc[train_idx]
    attr_names = list(snapshot.attributes)
    if attr_names:
        per_patient = train_rec.assign(_code=codes).groupby("_code")[attr_names].agg(_mode)
        for a in attr_names:
            patients[a] = per_patient[a].to_numpy()

    # ---- attacks on targets, record and patient level
    fprs = list(attack.fpr_points)
    grid = log_fpr_grid(200, 1e-5)
    results, rocs, summary = [], [], []
    for name, sc in attacks.items():
        levels = [("record", sc, membership)]
        if name.startswith("lira"):
            levels.append(("patient", patient_llr(sc, codes, n_pat), patient_membership(membership, codes, n_pat)))
        for level, s, m in levels:
            summ = summarize_attack(s, m, fprs, grid)
            for t, auc in enumerate(summ["auc_per_target"]):
                tpr_t = summarize_attack(s[t : t + 1], m[t : t + 1], fprs)["tpr_mean"]
                results.append(
                    {
                        "attack": name,
                        "attack_version": ATTACK_VERSIONS.get(name, "1"),
                        "level": level,
                        "params": "{}",
                        "target_model": int(models_arr[tgt[t]]),
                        "auc": float(auc),
                        "tpr_at_fpr": {float(k): float(v) for k, v in tpr_t.items()},
                    }
                )
            rocs.append(
                pd.DataFrame(
                    {
                        "attack": name,
                        "level": level,
                        "fpr": summ["grid"],
                        "tpr_mean": summ["tpr_curve_mean"],
                        "tpr_std": summ["tpr_curve_std"],
                    }
                )
            )
            summary.append(
                {
                    "attack": name,
                    "level": level,
                    "n_targets": T,
                    "auc_mean": summ["auc_mean"],
                    "auc_std": summ["auc_std"],
                    **{f"tpr_at_{f:g}": summ["tpr_mean"][f] for f in fprs},
                    **{f"tpr_std_at_{f:g}": summ["tpr_std"][f] for f in fprs},
                }
            )

    # ---- subgroups
    rec_frame = stats[["record_idx", "auc"]].assign(**{a: train_rec[a].to_numpy() for a in attr_names})
    sub_p = subgroup_table(
        patients,
        "risk_max",
        attr_names,
        risk_threshold=report.risk_threshold,
        top_fraction=report.top_fraction,
        n_boot=report.bootstrap_samples,
        records_col="n_records",
        pairs=True,
    )
    sub_r = subgroup_table(
        rec_frame,
        "auc",
        attr_names,
        risk_threshold=report.risk_threshold,
        top_fraction=report.top_fraction,
        n_boot=report.bootstrap_samples,
        records_col=None,
        pairs=False,
    )
    subgroups = pd.concat([sub_p.assign(level="patient"), sub_r.assign(level="record")], ignore_index=True)
    subgroups["suppressed"] = suppress_small_cells(subgroups, report.min_cell)["suppressed"].to_numpy()

    risk = patients["risk_max"]
    scored = risk.notna()
    lira = next((s for s in summary if s["attack"] == "lira_online" and s["level"] == "record"), None)
    headline = {
        "n_models": len(models),
        "n_targets": T,
        "n_records": n_train,
        "n_patients": n_pat,
        "risk_threshold": report.risk_threshold,
        "n_patients_above_threshold": int((risk >= report.risk_threshold).sum()),
        "share_patients_above_threshold": float((risk >= report.risk_threshold).sum() / max(int(scored.sum()), 1)),
        "max_record_auc": float(np.nanmax(stats["auc"])) if stats["auc"].notna().any() else None,
        "median_record_auc": float(np.nanmedian(stats["auc"])) if stats["auc"].notna().any() else None,
        "n_degenerate_records": int((stats["flag"] != "").sum()),
        "lira_auc_mean": lira["auc_mean"] if lira else None,
        "lira_auc_std": lira["auc_std"] if lira else None,
        **({f"lira_tpr_at_{f:g}": lira[f"tpr_at_{f:g}"] for f in fprs} if lira else {}),
    }
    return AuditResult(
        stats,
        patients,
        subgroups,
        pd.DataFrame(results),
        pd.concat(rocs, ignore_index=True) if rocs else pd.DataFrame(),
        pd.DataFrame(summary),
        headline,
    )


def _rmia(
    store: AuditStore,
    records: pd.DataFrame,
    pool_key: str,
    models: list[int],
    tgt: np.ndarray,
    ref: np.ndarray,
    masks: np.ndarray,
    train_idx: np.ndarray,
    codes: np.ndarray,
    n_views: int,
) -> dict[str, np.ndarray]:
    """RMIA online/offline on the targets; population z = the test split (non-members of every model)."""
    test_idx = records.loc[records["split"] == "test", "record_idx"].to_numpy()
    if len(test_idx) == 0:
        return {}
    z = np.concatenate([v for _, v in store.score_blocks(pool_key, models, test_idx, n_views, column="prob")], axis=1)
    z = np.nanmean(z, axis=2)  # (M, P) view-averaged probabilities
    out = {"rmia_online": np.full((len(tgt), len(train_idx)), np.nan), "rmia_offline": np.full((len(tgt), len(train_idx)), np.nan)}
    a = None
    for recs, probs in store.score_blocks(pool_key, models, train_idx, n_views, column="prob"):
        pos = np.searchsorted(train_idx, recs)
        x = np.nanmean(probs, axis=2)
        in_mask = masks[:, codes[pos]]
        if a is None:  # tuned on a reference model as pseudo-target, never on a target's truth (D15)
            a = tune_rmia_a(x[ref], in_mask[ref], z[ref], pseudo_target=0)
        out["rmia_online"][:, pos] = rmia_scores(x[tgt], x[ref], in_mask[ref], z[tgt], z[ref], online=True)
        out["rmia_offline"][:, pos] = rmia_scores(x[tgt], x[ref], in_mask[ref], z[tgt], z[ref], online=False, a=a)
    return out

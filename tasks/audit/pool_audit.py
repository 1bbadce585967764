"""From stored scores to risk tables: streams record blocks out of the store into the math (design D11).

The math lives in tasks/attacks and tasks/risk (arrays in, arrays out); this module only moves
blocks between the store and those functions and assembles the result frames.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.attacks import ATTACK_VERSIONS
from tasks.attacks.lira import SD_FLOOR_ABS, SD_FLOOR_REL, fit_lira_reference, lira_offline, lira_online
from tasks.attacks.loss import loss_attack
from tasks.attacks.record_auc import auc_interval_nct, record_statistics, se_vs_model_count
from tasks.attacks.rmia import rmia_scores, tune_rmia_a
from tasks.config import AttackConfig, ReportConfig
from tasks.ingest.snapshot import Snapshot
from tasks.risk import exposure_factors as ef
from tasks.risk.null import SURVIVAL_GRID, NullResult, SwapNull, assess_evidence, calibrated_subgroup_counts, patient_max_z
from tasks.risk.patient import patient_llr, patient_membership, patient_risk
from tasks.risk.roc import log_fpr_grid, summarize_attack
from tasks.risk.subgroup import group_labels, subgroup_table, suppress_small_cells
from tasks.storage.store import AuditStore, json_dumps
from tasks.training.pool import training_patients

# SE vs number of models (design D17, method §4.11): counts tried (capped at the pool, which is always added),
# records used (the first score block, or a seeded sample of it), and the paper's reference line for the
# median SE of the most exposed 1% of records.
SE_MODEL_COUNTS = (20, 50, 100, 200)
SE_SAMPLE_RECORDS = 50_000
SE_TOP_QUANTILE = 0.99
SE_REFERENCE = 0.05
SE_SEED = 0
# The record interval stored with every record (columns auc_nct_lo / auc_nct_hi).
INTERVAL_METHOD = "95% noncentral-t interval of the equal-variance binormal AUC (exact for normal scores), clipped at 0.5"
# RMIA settings (method §4.3); the offline ``a`` is tuned on reference model ``RMIA_PSEUDO_TARGET``.
RMIA_PARAMS: dict[str, Any] = {"gamma": 1.0, "n_population": 500, "trim": 0.01, "seed": 0}
RMIA_A_GRID = np.linspace(0.0, 1.0, 21)
RMIA_PSEUDO_TARGET = 0
LIRA_VARIANTS = {
    "lira_online": (lira_online, False),
    "lira_offline": (lira_offline, False),
    "lira_online_fixed_var": (lira_online, True),
    "lira_offline_fixed_var": (lira_offline, True),
}


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
    # SE / AUC vs number of models: one row per (n_models, scope), see model_count_ablation()
    model_count_ablation: pd.DataFrame = field(default_factory=pd.DataFrame)
    # parameters of each attack as run (JSON-able), also stored with every attack_results row
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # who is exposed and why: rarity / atypicality enrichment tests per level (exposure_factors.exposure_tests)
    exposure_tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    # one row per training patient: patient_key, label_set, label_prevalence, atypicality, risk_crossfit (of the most exposed record)
    patient_factors: pd.DataFrame = field(default_factory=pd.DataFrame)
    # the survival curves under the swap null: level, x (risk), mean, lo, hi (2.5% / 97.5% over swaps)
    survival_null: pd.DataFrame = field(default_factory=pd.DataFrame)
    null_params: dict[str, Any] = field(default_factory=dict)


def model_count_ablation(
    scores: np.ndarray,
    in_mask: np.ndarray,
    *,
    counts: tuple[int, ...] = SE_MODEL_COUNTS,
    max_records: int = SE_SAMPLE_RECORDS,
    seed: int = SE_SEED,
) -> pd.DataFrame:
    """SE vs number of models on one block of records (design D17).

    scores (M, N, V), in_mask (M, N) as for record_statistics; analyze_pool passes the first block's
    unflagged records (a zero-variance record's SE of 0 says nothing about the pool size). At most ``max_records`` records (a
    seeded sample) are used. The pool's own size is ``2 * median(min(n_in, n_out))`` over records with
    any usable model (= M for a complete balanced pool; less where models are missing); counts above
    it are dropped and it is added. Returns the rows of :func:`se_vs_model_count` (``n_models`` even:
    c // 2 IN and c // 2 OUT models per record; records without that many are left out of the row).
    """
    n = scores.shape[1]
    if n > max_records:
        pick = np.sort(np.random.default_rng(seed).choice(n, size=max_records, replace=False))
        scores, in_mask = scores[:, pick], in_mask[:, pick]
    valid = np.isfinite(scores).all(axis=2)
    per_side = np.minimum((valid & in_mask).sum(axis=0), (valid & ~in_mask).sum(axis=0))
    used = valid.any(axis=0)
    pool = 2 * int(np.median(per_side[used])) if used.any() else 0
    use = sorted({int(c) for c in counts if c <= pool} | ({pool} if pool >= 2 else set()))
    return se_vs_model_count(scores, in_mask, use, seed=seed, top_quantile=SE_TOP_QUANTILE)


def _se_headline(ablation: pd.DataFrame) -> dict[str, Any]:
    """Median SE of the top-1% records at the largest model count, and whether it is <= SE_REFERENCE."""
    top = ablation[(ablation["scope"] != "all") & ablation["se_median"].notna()] if len(ablation) else ablation
    if top.empty:
        return {"se_median_at_pool_size": None, "se_n_models": None, "pool_big_enough": None}
    row = top.loc[top["n_models"].idxmax()]
    se = float(row["se_median"])
    return {"se_median_at_pool_size": se, "se_n_models": int(row["n_models"]), "pool_big_enough": bool(se <= SE_REFERENCE)}


def _params_json(params: dict[str, Any], level: str) -> str:
    """An attack's parameters as stored in attack_results.params; patient level adds how records combine."""
    return json_dumps({**params, "patient_test": "sum of record scores"} if level == "patient" else params)


def _mode(values: pd.Series) -> str:
    counts = values.value_counts()
    return str(counts[counts == counts.max()].sort_index().index[0])


def report_subgroup_table(
    frame: pd.DataFrame, risk_col: str, attributes: list[str], report: ReportConfig, *, records_col: str | None, pairs: bool = False
) -> pd.DataFrame:
    """:func:`subgroup_table` with the audit's report settings (threshold, top fraction, bootstrap)."""
    return subgroup_table(
        frame,
        risk_col,
        attributes,
        risk_threshold=report.risk_threshold,
        top_fraction=report.top_fraction,
        n_boot=report.bootstrap_samples,
        records_col=records_col,
        pairs=pairs,
    )


def add_patient_attributes(patients: pd.DataFrame, records: pd.DataFrame, codes: np.ndarray, attributes: list[str]) -> None:
    """Add each subgroup attribute to ``patients`` (row p = code p) as the patient's most frequent
    value over ``records`` (ties: the first in sort order; records differ e.g. in age bin)."""
    if attributes:
        per_patient = records.assign(_code=codes).groupby("_code")[attributes].agg(_mode)
        for a in attributes:
            patients[a] = per_patient[a].to_numpy()


def exposed_units(frame: pd.DataFrame, risk_col: str, threshold: float) -> np.ndarray:
    """Exposed units: the statistics' calibrated ``at_risk`` flag where the frame has one, else risk >= threshold."""
    if "at_risk" in frame.columns:
        return frame["at_risk"].fillna(False).to_numpy(dtype=bool)
    return (frame[risk_col] >= threshold).fillna(False).to_numpy(dtype=bool)


def exposure_analysis(
    snapshot: Snapshot, subgroups: pd.DataFrame, stats: pd.DataFrame, patients: pd.DataFrame, codes: np.ndarray, report: ReportConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Who is exposed and why (tasks/risk/exposure_factors.py), added in place where noted.

    Adds ``label_set``, ``label_prevalence`` (rarity) and ``atypicality`` to ``stats`` (one row per training
    record, record_idx order; the atypicality from its ``mu_out_half`` column, which is dropped); returns
    (subgroups with a ``kind`` column plus label-group rows for
    multi-label tasks and rarity / atypicality bin rows, at patient and record level; the enrichment
    tests; one row of factors per patient). A patient is in a label group if any of their records has
    the label; their rarity and atypicality are those of their most exposed record (exposure_factors).
    """
    records = snapshot.records
    labels = snapshot.labels()
    train = (records["split"] == "train").to_numpy()
    rec_idx = stats["record_idx"].to_numpy()
    lab = labels[rec_idx]
    names = list(snapshot.task.label_names)
    stats["label_set"] = ef.label_sets(lab, names)
    stats["label_prevalence"] = ef.label_prevalence(labels, train)[rec_idx]
    stats["atypicality"] = ef.atypicality(stats.pop("mu_out_half").to_numpy(), lab)
    n_pat = len(patients)
    risk_x = stats["auc_crossfit"].to_numpy()
    label_set = stats[["label_set"]].groupby(codes)["label_set"].agg(lambda v: " | ".join(sorted(set(v))))
    factors = pd.DataFrame(
        {
            "patient_key": patients["patient_key"].to_numpy(),
            "label_set": label_set.reindex(range(n_pat)).to_numpy(),
            "label_prevalence": ef.value_at_max(codes, stats["auc"].to_numpy(), stats["label_prevalence"].to_numpy(), n_pat),
            "atypicality": ef.value_at_max(codes, risk_x, stats["atypicality"].to_numpy(), n_pat),
            "risk_crossfit": ef.value_at_max(codes, risk_x, risk_x, n_pat),
        }
    )
    subgroups = subgroups.assign(kind=[ef.attribute_kind(a) for a in subgroups["attribute"]])
    kw = {"risk_threshold": report.risk_threshold, "top_fraction": report.top_fraction, "n_boot": report.bootstrap_samples}
    extra = []
    if snapshot.task.kind == "multilabel":
        mem_p = np.zeros((n_pat, len(names)), dtype=bool)
        np.logical_or.at(mem_p, codes, lab > 0.5)
        extra.append(ef.label_group_table(patients["risk_max"], mem_p, names, records=patients["n_records"], **kw).assign(level="patient"))
        extra.append(ef.label_group_table(stats["auc"], lab > 0.5, names, **kw).assign(level="record"))
    # rarity bins against the audit's risk; atypicality bins against the cross-fitted risk (exposure_factors)
    levels = (("patient", patients, "risk_max", "n_records", factors), ("record", stats, "auc", None, stats))
    for level, frame, risk_col, rec_col, crossfit in levels:
        rec = {rec_col: frame[rec_col].to_numpy()} if rec_col else {}
        risk_x = crossfit["risk_crossfit" if level == "patient" else "auc_crossfit"].to_numpy()
        for name, risk, bins in (
            ("rarity", frame[risk_col].to_numpy(), ef.rarity_bins(crossfit["label_prevalence"])),
            ("atypicality", risk_x, ef.atypicality_bins(crossfit["atypicality"])),
        ):
            binned = pd.DataFrame({"risk": risk, name: bins, **rec})
            extra.append(report_subgroup_table(binned, "risk", [name], report, records_col=rec_col).assign(level=level))
    kinds = {ef.RARITY_ATTRIBUTE: ef.KIND_RARITY, ef.ATYPICALITY_ATTRIBUTE: ef.KIND_ATYPICALITY}
    subgroups = pd.concat([subgroups, *(t.assign(kind=t["attribute"].map(kinds).fillna(ef.KIND_LABEL)) for t in extra)], ignore_index=True)
    thr = report.risk_threshold
    tests = pd.concat(
        [
            ef.exposure_tests(
                level,
                frame[risk_col],
                exposed_units(frame, risk_col, thr),
                f["label_prevalence"],
                f["atypicality"],
                f[x_col],
                (f[x_col] >= thr).to_numpy(),
            )
            for level, frame, risk_col, f, x_col in (
                ("patient", patients, "risk_max", factors, "risk_crossfit"),
                ("record", stats, "auc", stats, "auc_crossfit"),
            )
        ],
        ignore_index=True,
    )
    rarity_exposed = "at_risk flag (FDR-controlled)" if "at_risk" in patients.columns else f"risk >= {thr:g}"
    tests["exposed"] = np.where(tests["factor"] == ef.KIND_RARITY, rarity_exposed, f"cross-fitted risk >= {thr:g}")
    return subgroups, tests, factors


def _exposure_headline(tests: pd.DataFrame) -> dict[str, Any]:
    """Patient-level rarity / atypicality enrichment and the risk-atypicality rank correlation."""
    pat = tests[tests["level"] == "patient"].set_index("factor")
    out: dict[str, Any] = {}
    for factor, prefix in ((ef.KIND_RARITY, "rare_patients"), (ef.KIND_ATYPICALITY, "atypical_decile")):
        if factor in pat.index:
            row = pat.loc[factor]
            out[f"{prefix}_exposed"] = int(row["observed"])
            out[f"{prefix}_expected"] = float(row["expected"])
            out[f"{prefix}_share_exposed"] = float(row["share_exposed_in_set"])
            out[f"{prefix}_share_all"] = float(row["share_all_in_set"])
            out[f"{prefix}_p"] = float(row["p_value"])
    if ef.KIND_ATYPICALITY in pat.index:
        row = pat.loc[ef.KIND_ATYPICALITY]
        out.update({f"atypicality_spearman_{k}": float(row[f"spearman_{k}"]) for k in ("rho", "lo", "hi", "p")})
    return out


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
    attacks = {name: np.full((T, n_train), np.nan) for name in (*LIRA_VARIANTS, "loss")}
    membership = np.zeros((T, n_train), dtype=bool)
    stats_parts = []
    ablation: pd.DataFrame | None = None
    global_sd: tuple[float, float] | None = None
    scored_models = np.zeros(len(models), dtype=bool)  # models with at least one finite score
    null = SwapNull(
        models,
        n_pat,
        n_swaps=report.null_swaps,
        seed=report.null_seed,
        threshold=report.risk_threshold,
        min_per_side=attack.min_models_per_side,
    )
    done = 0
    for recs, scores in store.score_blocks(pool_key, models, train_idx, n_views, block_size):
        pos = np.searchsorted(train_idx, recs)
        in_mask = masks[:, codes[pos]]
        part = record_statistics(scores, in_mask, attack.min_models_per_side)
        part = part.join(ef.crossfit_statistics(scores, in_mask, attack.min_models_per_side))  # for atypicality
        part.insert(0, "record_idx", recs)
        stats_parts.append(part)
        null.add(scores, in_mask, codes[pos])
        scored_models |= np.isfinite(scores).any(axis=(1, 2))
        if ablation is None:  # SE vs number of models on the first block's unflagged records (design D17)
            ok = (part["flag"] == "").to_numpy()
            ablation = model_count_ablation(scores[:, ok], in_mask[:, ok])
        if T:
            reference = fit_lira_reference(scores[ref], in_mask[ref])
            if global_sd is None:  # fixed variance: one pair of stds for the whole pool, from the first block
                global_sd = (reference.sd_in_global, reference.sd_out_global)
            reference = dataclasses.replace(reference, sd_in_global=global_sd[0], sd_out_global=global_sd[1])
            for name, (fn, fixed) in LIRA_VARIANTS.items():
                attacks[name][:, pos] = fn(scores[tgt], reference, fix_variance=fixed)
            attacks["loss"][:, pos] = loss_attack(scores[tgt])
            membership[:, pos] = in_mask[tgt]
        done += len(recs)
        if progress:
            progress(done, n_train)
    stats = pd.concat(stats_parts, ignore_index=True)
    if ablation is None:
        ablation = pd.DataFrame(columns=["n_models", "scope", "n_records", "se_median", "se_p90", "se_max", "auc_median"])

    params: dict[str, dict[str, Any]] = {}
    if T:
        for name, (_, fixed) in LIRA_VARIANTS.items():
            params[name] = {
                "fix_variance": fixed,
                "n_reference_models": int(scored_models[ref].sum()),
                "n_views": n_views,
                "mu": "median",
                "sd": "std_ddof0",
                "sd_floor_abs": SD_FLOOR_ABS,
                "sd_floor_rel": SD_FLOOR_REL,
                **({"sd_in_global": global_sd[0], "sd_out_global": global_sd[1]} if fixed and global_sd else {}),
            }
        params["loss"] = {"score": snapshot.task.score_transform, "views": "mean"}
        rmia, rmia_params = _rmia(store, records, pool_key, models, tgt, ref[scored_models[ref]], masks, train_idx, codes, n_views)
        attacks.update(rmia)
        params.update(rmia_params)

    # ---- patients
    patients = patient_risk(stats["auc"].to_numpy(), codes, n_pat)
    patients.insert(0, "patient_key", order)
    null_res = _add_null_columns(stats, patients, null, codes, report)
    train_rec = records.set_index("record_idx").loc[train_idx]
    attr_names = list(snapshot.attributes)
    add_patient_attributes(patients, train_rec, codes, attr_names)

    # ---- attacks on targets, record and patient level
    fprs = list(attack.fpr_points)
    grid = log_fpr_grid(200, 1e-5)
    results, rocs, summary = [], [], []
    for name, sc in attacks.items() if T else ():  # no held-out target: no aggregate attack to summarise
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
                        "params": _params_json(params.get(name, {}), level),
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
    rec_frame = stats[["record_idx", "auc", "at_risk", "chance_above"]].assign(**{a: train_rec[a].to_numpy() for a in attr_names})
    sub_p = _with_calibrated(
        report_subgroup_table(patients, "risk_max", attr_names, report, records_col="n_records", pairs=True),
        patients,
        "risk_max",
        attr_names,
        True,
    )
    sub_r = _with_calibrated(
        report_subgroup_table(rec_frame, "auc", attr_names, report, records_col=None), rec_frame, "auc", attr_names, False
    )
    subgroups = pd.concat([sub_p.assign(level="patient"), sub_r.assign(level="record")], ignore_index=True)
    subgroups, exposure, patient_factors = exposure_analysis(snapshot, subgroups, stats, patients, codes, report)
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
        "n_models_without_scores": int((~scored_models).sum()),
        "models_without_scores": [int(m) for m in models_arr[~scored_models]],
        "n_degenerate_by_flag": {str(k): int(v) for k, v in stats.loc[stats["flag"] != "", "flag"].value_counts().items()},
        "lira_auc_mean": lira["auc_mean"] if lira else None,
        "lira_auc_std": lira["auc_std"] if lira else None,
        **({f"lira_tpr_at_{f:g}": lira[f"tpr_at_{f:g}"] for f in fprs} if lira else {}),
        **_se_headline(ablation),
        **_exposure_headline(exposure),
        **_null_headline(stats, patients, null_res, report, len(models)),
    }
    return AuditResult(
        record_stats=stats,
        patient_stats=patients,
        subgroups=subgroups,
        attack_results=pd.DataFrame(results),
        attack_roc=pd.concat(rocs, ignore_index=True) if rocs else pd.DataFrame(columns=["attack", "level", "fpr", "tpr_mean", "tpr_std"]),
        attack_summary=pd.DataFrame(summary),
        headline=headline,
        model_count_ablation=ablation,
        attack_params=params,
        exposure_tests=exposure,
        patient_factors=patient_factors,
        survival_null=_survival_band(null_res),
        null_params=null_res.params,
    )


def store_result(store: AuditStore, result: AuditResult, audit_id: str, pool_key: str, attr_names: list[str]) -> None:
    """Append an audit's result frames to the store's result tables (NaN becomes NULL)."""
    keys = {"audit_id": audit_id, "pool_key": pool_key}
    store.insert_frame("record_stats", result.record_stats.assign(**keys))
    patients = result.patient_stats
    attributes = (
        [dict(zip(attr_names, vals, strict=True)) for vals in patients[attr_names].itertuples(index=False)]
        if attr_names
        else [{}] * len(patients)
    )
    cols = ["patient_key", "n_records", "n_scored", "risk_max", "risk_mean", *[c for c in NULL_PATIENT_COLUMNS if c in patients]]
    store.insert_frame("patient_stats", patients[cols].assign(**keys, attributes=attributes))
    store.insert_frame("subgroup_stats", result.subgroups.assign(**keys))
    if not result.attack_results.empty:
        store.insert_frame("attack_results", result.attack_results.assign(**keys))
        store.insert_frame("attack_roc_curves", result.attack_roc.assign(**keys))
    if not result.model_count_ablation.empty:
        store.insert_frame("model_count_stats", result.model_count_ablation.assign(**keys))
    if not result.exposure_tests.empty:
        store.insert_frame("exposure_tests", result.exposure_tests.assign(**keys))


# Columns the swap null adds to patient_stats (record_stats gains the same plus auc_nct_lo / auc_nct_hi).
NULL_PATIENT_COLUMNS = ("swap_p", "swap_q", "at_risk", "chance_above")


def _add_null_columns(stats: pd.DataFrame, patients: pd.DataFrame, null: SwapNull, codes: np.ndarray, report: ReportConfig) -> NullResult:
    """Finish the swap null and add its columns to ``stats`` (records) and ``patients`` in place.

    record_stats: auc_nct_lo / auc_nct_hi (:data:`INTERVAL_METHOD`), swap_p, swap_q, at_risk, chance_above;
    patient_stats: swap_p, swap_q, at_risk (risk >= threshold and q <= fdr), chance_above (share of swaps in
    which the unit is at or above the threshold by chance; sums to the expected-by-chance count).
    """
    lo, hi = auc_interval_nct(*(stats[c].to_numpy() for c in ("mu_in", "mu_out", "sd_in", "sd_out", "n_in", "n_out")))
    flagged = (stats["flag"] != "").to_numpy()
    lo[flagged] = np.nan
    hi[flagged] = np.nan
    stats["auc_nct_lo"], stats["auc_nct_hi"] = lo, hi
    record_z = np.concatenate(null.observed) if null.observed else np.empty(0)
    res = null.finish(patient_max_z(record_z, codes, len(patients)))
    for frame, p, q, chance, risk in (
        (stats, res.record_p, res.record_q, res.record_chance, stats["auc"]),
        (patients, res.patient_p, res.patient_q, res.patient_chance, patients["risk_max"]),
    ):
        frame["swap_p"], frame["swap_q"] = p, q
        frame["at_risk"] = ((risk >= report.risk_threshold) & (frame["swap_q"] <= report.fdr)).to_numpy()
        frame["chance_above"] = chance
    return res


def _with_calibrated(table: pd.DataFrame, frame: pd.DataFrame, risk_col: str, attributes: list[str], pairs: bool) -> pd.DataFrame:
    """``table`` (a subgroup table of ``frame``) plus n_at_risk (FDR-controlled) and expected_above (chance) per group."""
    scored = frame[frame[risk_col].notna()]
    labels = {a: group_labels(scored[a]) for a in attributes}
    cal = calibrated_subgroup_counts(labels, scored["at_risk"].to_numpy(), scored["chance_above"].to_numpy(), pairs=pairs)
    return table.merge(cal, on=["attribute", "group"], how="left")


def _top_interval_width(stats: pd.DataFrame, top_quantile: float = SE_TOP_QUANTILE) -> float | None:
    """Median 95% interval width of the top (1 - top_quantile) records by risk (at least one record)."""
    ok = stats[stats["auc_nct_lo"].notna()]
    if ok.empty:
        return None
    k = max(1, int(np.ceil((1.0 - top_quantile) * len(ok))))
    top = ok.nlargest(k, "auc")
    return float(np.median(top["auc_nct_hi"] - top["auc_nct_lo"]))


def _null_headline(stats: pd.DataFrame, patients: pd.DataFrame, res: NullResult, report: ReportConfig, n_models: int) -> dict[str, Any]:
    """Headline keys of the swap null: raw vs expected-by-chance vs FDR-controlled counts and the evidence verdict."""
    n_raw = int((patients["risk_max"] >= report.risk_threshold).sum())
    ev = assess_evidence(
        n_raw,
        res.patient_expected,
        _top_interval_width(stats),
        res.patient_null_max,
        threshold=report.risk_threshold,
        n_models=n_models,
        max_noise_share=report.max_noise_share,
        max_interval_width=report.max_interval_width,
    )
    return {
        "n_patients_expected_by_chance": round(res.patient_expected, 3),
        "n_patients_at_risk": int(patients["at_risk"].sum()),
        "n_patients_scored": int(patients["risk_max"].notna().sum()),
        "fdr": report.fdr,
        "n_records_above_threshold": int((stats["auc"] >= report.risk_threshold).sum()),
        "n_records_expected_by_chance": round(res.record_expected, 3),
        "n_records_at_risk": int(stats["at_risk"].sum()),
        "noise_share": round(ev.noise_share, 4),
        "top_interval_width": ev.top_interval_width,
        "interval_method": INTERVAL_METHOD,
        "n_models_needed": ev.n_models_needed,
        "evidence": ev.level,
        "evidence_reason": ev.reason,
        "null_swaps": int(res.params["n_swaps"]),
        "null_seed": int(res.params["seed"]),
    }


def _survival_band(res: NullResult) -> pd.DataFrame:
    """Null survival band per level: mean and 2.5% / 97.5% quantiles over swaps of the share >= x."""
    parts = []
    for level, share in res.survival_null.items():
        if share.size == 0:
            continue
        parts.append(
            pd.DataFrame(
                {
                    "level": level,
                    "x": SURVIVAL_GRID,
                    "mean": share.mean(axis=0),
                    "lo": np.quantile(share, 0.025, axis=0),
                    "hi": np.quantile(share, 0.975, axis=0),
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["level", "x", "mean", "lo", "hi"])


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
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """RMIA online/offline on the targets and their parameters; population z = the test split (non-members of every model)."""
    test_idx = records.loc[records["split"] == "test", "record_idx"].to_numpy()
    if len(test_idx) == 0 or len(ref) < 2:
        return {}, {}
    z = np.concatenate([v for _, v in store.score_blocks(pool_key, models, test_idx, n_views, column="prob")], axis=1)
    with warnings.catch_warnings():  # a model without scores (missing) gives all-NaN slices
        warnings.simplefilter("ignore", RuntimeWarning)
        z = np.nanmean(z, axis=2)  # (M, P) view-averaged probabilities
    out = {"rmia_online": np.full((len(tgt), len(train_idx)), np.nan), "rmia_offline": np.full((len(tgt), len(train_idx)), np.nan)}
    a: float | None = None
    a_source: str | None = None
    for recs, probs in store.score_blocks(pool_key, models, train_idx, n_views, column="prob"):
        pos = np.searchsorted(train_idx, recs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            x = np.nanmean(probs, axis=2)
        in_mask = masks[:, codes[pos]]
        if a is None:  # tuned on a reference model as pseudo-target, never on a target's truth (design D15)
            try:
                a = tune_rmia_a(x[ref], in_mask[ref], z[ref], pseudo_target=RMIA_PSEUDO_TARGET, grid=RMIA_A_GRID, **RMIA_PARAMS)
            except ValueError:  # the pseudo-target has no usable members / non-members: keep the paper's default
                a, a_source = 0.3, "default (tuning failed: no finite AUC on the pseudo-target)"
            else:
                a_source = f"tuned on reference model {int(models[ref[RMIA_PSEUDO_TARGET]])} as pseudo-target"
        out["rmia_online"][:, pos] = rmia_scores(x[tgt], x[ref], in_mask[ref], z[tgt], z[ref], online=True, **RMIA_PARAMS)
        out["rmia_offline"][:, pos] = rmia_scores(x[tgt], x[ref], in_mask[ref], z[tgt], z[ref], online=False, a=a, **RMIA_PARAMS)
    common = {
        **RMIA_PARAMS,
        "n_reference_models": len(ref),
        "population": "test split",
        "n_population_available": len(test_idx),
        "probabilities": "view mean",
    }
    params = {
        "rmia_online": {"online": True, **common},
        "rmia_offline": {
            "online": False,
            "a": a,
            "a_source": a_source,
            "a_grid": [float(RMIA_A_GRID[0]), float(RMIA_A_GRID[-1]), len(RMIA_A_GRID)],
            **common,
        },
    }
    return out, params

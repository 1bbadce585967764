"""From a pool's scores to risk tables (design D11).

:func:`audit_pool` takes the pool as arrays (:class:`PoolScores`: masks and blocks of scores) and runs the
record statistics, the swap null and every registered pool attack (tasks/attacks/base.py) block by block;
:func:`analyze_pool` feeds it from the store, streaming the blocks. The math lives in tasks/attacks and
tasks/risk (arrays in, arrays out); this module moves blocks into it and assembles the result frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.attacks.base import AttackContext, AttackInputs, start_attacks, view_mean
from tasks.attacks.record_auc import auc_interval_nct, record_statistics, se_vs_model_count
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


@dataclass
class PoolScores:
    """A pool's scores as the pool audit reads them: arrays, or blocks of arrays streamed from a store.

    models: (M,) model ids; those below ``n_targets`` are the held-out targets, the rest the references.
    masks: (M, P) bool, model trained on patient p (patients in :func:`training_patients` order).
    score_blocks: (record_idx (n,), scores (M, n, V) float64, NaN = not scored) over the training records in
        record_idx order; prob_blocks: the same with probabilities, read only when a probability attack runs.
    population: (record_idx (n,), probabilities (M, n, V)) over the test split, non-members of every model,
        ``n_population`` records in all; read only when a probability attack runs.
    """

    models: list[int]
    n_targets: int
    n_views: int
    masks: np.ndarray
    score_blocks: Iterable[tuple[np.ndarray, np.ndarray]]
    prob_blocks: Iterable[tuple[np.ndarray, np.ndarray]] = ()
    population: Iterable[tuple[np.ndarray, np.ndarray]] = ()
    n_population: int = 0


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
    """:func:`audit_pool` over the complete models of a stored pool, streamed block by block out of ``store``."""
    records = snapshot.records
    train_idx, _, _ = training_patients(records)
    test_idx = records.loc[records["split"] == "test", "record_idx"].to_numpy()
    pool = PoolScores(
        models=models,
        n_targets=n_targets,
        n_views=n_views,
        masks=store.load_masks(pool_key, max(models) + 1)[models],
        score_blocks=store.score_blocks(pool_key, models, train_idx, n_views, block_size),
        prob_blocks=store.score_blocks(pool_key, models, train_idx, n_views, column="prob"),
        population=store.score_blocks(pool_key, models, test_idx, n_views, column="prob"),
        n_population=len(test_idx),
    )
    return audit_pool(snapshot, pool, attack, report, progress=progress)


def audit_pool(
    snapshot: Snapshot,
    pool: PoolScores,
    attack: AttackConfig,
    report: ReportConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> AuditResult:
    """Run every record-level statistic and every registered pool attack (tasks/attacks/base.py) over a pool."""
    records = snapshot.records
    train_idx, order, codes = training_patients(records)
    n_pat = len(order)
    models = pool.models
    masks = pool.masks
    models_arr = np.asarray(models)
    tgt = np.flatnonzero(models_arr < pool.n_targets)
    ref = np.flatnonzero(models_arr >= pool.n_targets)
    n_train = len(train_idx)
    T = len(tgt)
    # no held-out target: no aggregate attack to run or summarise
    runs = start_attacks(AttackContext("pool", pool.n_views, snapshot.task.score_transform)) if T else {}
    score_runs = {name: a for name, a in runs.items() if a.needs == "scores"}
    attacks = {name: np.full((T, n_train), np.nan) for name in runs}
    membership = np.zeros((T, n_train), dtype=bool)
    stats_parts = []
    ablation: pd.DataFrame | None = None
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
    for recs, scores in pool.score_blocks:
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
            inputs = AttackInputs(in_mask[ref], target_scores=scores[tgt], ref_scores=scores[ref], ref_models=tuple(models_arr[ref]))
            for name, run in score_runs.items():
                attacks[name][:, pos] = run.score(inputs)
            membership[:, pos] = in_mask[tgt]
        done += len(recs)
        if progress:
            progress(done, n_train)
    stats = pd.concat(stats_parts, ignore_index=True)
    if ablation is None:
        ablation = pd.DataFrame(columns=["n_models", "scope", "n_records", "se_median", "se_p90", "se_max", "auc_median"])
    # probability attacks: a second pass, on the reference models with scores (a missing model has none)
    scored_ref = ref[scored_models[ref]]
    for name, run in list(runs.items()):
        if run.needs == "probs" and not run.usable(len(scored_ref), pool.n_population):
            del runs[name], attacks[name]
    prob_runs = {name: a for name, a in runs.items() if a.needs == "probs"}
    if prob_runs:
        z = view_mean(np.concatenate([v for _, v in pool.population], axis=1))  # (M, P)
        for recs, probs in pool.prob_blocks:
            pos = np.searchsorted(train_idx, recs)
            x = view_mean(probs)
            inputs = AttackInputs(
                masks[:, codes[pos]][scored_ref],
                target_probs=x[tgt],
                ref_probs=x[scored_ref],
                target_population=z[tgt],
                ref_population=z[scored_ref],
                ref_models=tuple(models_arr[scored_ref]),
            )
            for name, run in prob_runs.items():
                attacks[name][:, pos] = run.score(inputs)
    params = {name: run.params(len(scored_ref)) for name, run in runs.items()}

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
    for name, sc in attacks.items():
        levels = [("record", sc, membership)]
        if runs[name].llr:
            levels.append(("patient", patient_llr(sc, codes, n_pat), patient_membership(membership, codes, n_pat)))
        for level, s, m in levels:
            summ = summarize_attack(s, m, fprs, grid)
            for t, auc in enumerate(summ["auc_per_target"]):
                tpr_t = summarize_attack(s[t : t + 1], m[t : t + 1], fprs)["tpr_mean"]
                results.append(
                    {
                        "attack": name,
                        "attack_version": runs[name].version,
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

"""From an existing model's logits and a reference pool to its record, patient and subgroup risk.

Moves arrays between the store and the math in tasks/risk/model_audit.py and the registered model-audit
attacks of tasks/attacks (few-reference offline LiRA, whose score is the record risk, offline RMIA, LOSS);
no Prefect here. Reference models are the stored pool's models: every record
of the training split is OUT for about half of them, the test split for all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.attacks.base import AttackContext, AttackInputs, start_attacks, view_mean
from tasks.attacks.lira import FewReferenceLiraOffline
from tasks.attacks.rmia import RmiaOffline
from tasks.attacks.scores import score_and_probability
from tasks.audit.pool_audit import add_patient_attributes, report_subgroup_table
from tasks.config import AttackConfig, ReportConfig
from tasks.ingest.snapshot import Snapshot
from tasks.risk.model_audit import exposure_summary, membership_attack_summary, model_patient_risk
from tasks.risk.model_audit_null import member_qvalues, member_verdict
from tasks.risk.patient import patient_risk
from tasks.risk.subgroup import suppress_small_cells
from tasks.storage.store import AuditStore
from tasks.training.pool import training_patients

MIN_POPULATION = 20  # RMIA needs points that are non-members of every model


@dataclass
class ModelAuditResult:
    records: pd.DataFrame  # one row per snapshot record: record_idx, member, score, lira_offline, risk, rmia_offline, n_out
    patients: pd.DataFrame  # one row per patient: patient_key, member, n_records, n_member_records, risk, risk_mean, attributes
    attacks: pd.DataFrame  # one row per (attack, level): auc, n_members, n_non_members, tpr_at_<fpr>
    subgroups: pd.DataFrame  # member patients' subgroup table (small cells flagged)
    headline: dict[str, Any] = field(default_factory=dict)


def reference_arrays(store: AuditStore, snapshot: Snapshot, pool_key: str, models: list[int], n_views: int) -> tuple[np.ndarray, ...]:
    """(scores (M, N, V), probs (M, N, V), in (M, N) bool) of the reference models on every record."""
    records = snapshot.records
    all_idx = records["record_idx"].to_numpy()
    scores = np.concatenate([v for _, v in store.score_blocks(pool_key, models, all_idx, n_views)], axis=1)
    probs = np.concatenate([v for _, v in store.score_blocks(pool_key, models, all_idx, n_views, column="prob")], axis=1)
    train_idx, _, codes = training_patients(records)
    masks = store.load_masks(pool_key, max(models) + 1)[models]
    ref_in = np.zeros((len(models), len(records)), dtype=bool)
    ref_in[:, train_idx] = masks[:, codes]
    return scores, probs, ref_in


def analyze_model(
    snapshot: Snapshot,
    logits: np.ndarray,
    member: np.ndarray,
    ref_scores: np.ndarray,
    ref_probs: np.ndarray,
    ref_in: np.ndarray,
    *,
    variance: str,
    attack: AttackConfig,
    report: ReportConfig,
    fdr: float = 0.05,
) -> ModelAuditResult:
    """Audit one model. logits: (N, V, C) float32 on every snapshot record (NaN = not given);
    member: (N,) bool; ref_*: (M, N, V) / (M, N) as from :func:`reference_arrays`."""
    records = snapshot.records
    labels = snapshot.labels()
    task = snapshot.task
    scores, probs, _flags = score_and_probability(task.score_transform, logits, labels)
    # population for RMIA: test-split records the audited model did not see (OUT for every model)
    is_test = (records["split"] == "test").to_numpy()
    pop = np.flatnonzero(is_test & ~member)
    n_pop = len(pop) if len(pop) >= MIN_POPULATION else 0
    x_t = view_mean(probs)
    x_r = view_mean(ref_probs)
    inputs = AttackInputs(
        ref_in,
        target_scores=scores[None],
        ref_scores=ref_scores,
        target_probs=x_t[None],
        ref_probs=x_r,
        target_population=x_t[None, pop],
        ref_population=x_r[:, pop],
        ref_models=tuple(range(ref_in.shape[0])),
    )
    runs = start_attacks(AttackContext("model", scores.shape[1], task.score_transform, variance=variance))
    usable = {name: run.usable(ref_in.shape[0], n_pop) for name, run in runs.items()}
    attack_scores = {name: run.score(inputs)[0] if usable[name] else np.full(len(records), np.nan) for name, run in runs.items()}
    lira, rmia = runs["lira_offline"], runs["rmia_offline"]
    if not isinstance(lira, FewReferenceLiraOffline) or lira.fit is None or not isinstance(rmia, RmiaOffline):
        raise TypeError("the model audit's record risk is the few-reference offline LiRA, with offline RMIA beside it")
    tr = lira.fit
    rmia_note = f"population: {len(pop)} test-split non-members"
    rmia_note += f", a = {rmia.a:g}" if usable["rmia_offline"] else f": fewer than {MIN_POPULATION}, offline RMIA skipped"

    rec = pd.DataFrame(
        {
            "record_idx": records["record_idx"].to_numpy(),
            "member": member,
            "score": np.nanmean(scores, axis=1),
            "lira_offline": tr.lira_offline,
            "risk": tr.risk,
            "rmia_offline": attack_scores["rmia_offline"],
            "n_out": tr.n_out.astype(np.int64),
        }
    )

    codes, order = pd.factorize(records["patient_key"], sort=False)
    n_pat = len(order)
    patients = model_patient_risk(tr.risk, member, codes, n_pat)
    patients.insert(0, "patient_key", list(order))
    attrs = list(snapshot.attributes)
    add_patient_attributes(patients, records, codes, attrs)
    # the model's own non-member patients are the null of every member patient's risk
    # ranked on log-risk: risk rounds to 1.0 for strongly memorised records, its log still orders them
    is_mem = patients["member"].to_numpy()
    log_risk = model_patient_risk(tr.lira_offline, member, codes, n_pat)["risk"].to_numpy(dtype=float)
    null = patients.loc[~is_mem, "risk"].to_numpy(dtype=float)
    p_val, q_val = member_qvalues(log_risk[is_mem], log_risk[~is_mem])
    patients["p_value"], patients["q_value"] = np.nan, np.nan
    patients.loc[is_mem, "p_value"], patients.loc[is_mem, "q_value"] = p_val, q_val

    fprs = list(attack.fpr_points)
    patient_member = patients["member"].to_numpy()
    rec_level = membership_attack_summary(attack_scores, member, fprs).assign(level="record")
    # patient level: the attacker does not know which records were used, so the max over all records
    pat_scores = {k: patient_risk(v, codes, n_pat)["risk_max"].to_numpy() for k, v in attack_scores.items()}
    pat_level = membership_attack_summary(pat_scores, patient_member, fprs).assign(level="patient")
    attacks = pd.concat([rec_level, pat_level], ignore_index=True)

    mem_pat = patients[patients["member"]].sort_values("patient_key", kind="stable")
    subgroups = pd.DataFrame()
    if attrs and len(mem_pat):
        subgroups = report_subgroup_table(mem_pat, "risk", attrs, report, records_col="n_member_records")
        subgroups["suppressed"] = suppress_small_cells(subgroups, report.min_cell)["suppressed"].to_numpy()

    lira_rec = attacks[(attacks["attack"] == "lira_offline") & (attacks["level"] == "record")].iloc[0]
    headline = {
        **exposure_summary(patients, report.risk_threshold),
        **member_verdict(
            patients.loc[is_mem, "risk"].to_numpy(dtype=float), null, report.risk_threshold, fdr, log_risk[is_mem], log_risk[~is_mem]
        ),
        "n_records": len(records),
        "n_member_records": int(member.sum()),
        "n_references": int(ref_in.shape[0]),
        "median_out_references": float(np.median(tr.n_out)),
        "variance": tr.variance,
        "lira_offline_auc": float(lira_rec["auc"]),
        "lira_offline_tpr_at_1e-3": float(lira_rec.get("tpr_at_0.001", np.nan)),
        "rmia_note": rmia_note,
        "records_without_score": int(np.isnan(tr.risk).sum()),
    }
    return ModelAuditResult(records=rec, patients=patients, attacks=attacks, subgroups=subgroups, headline=headline)

"""Robust numerics at the pipeline level: degenerate logits go through store -> analysis -> store without NaN or crash.

A tiny MIMIC-IV-ED pool is written straight into a temporary DuckDB through AuditStore (logits -> score
transform -> load_model_shard, as the flow does), with float16-saturated logits, +-inf and NaN logits,
zero-variance records and missing models; analyze_pool and the flow's inserts must flag and count them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.attacks.scores import get_transform
from tasks.audit.pool_audit import analyze_pool, store_result
from tasks.config import AttackConfig, ReportConfig
from tasks.datasets import get_dataset
from tasks.ingest.pseudonym import load_or_create_secret
from tasks.ingest.snapshot import build_snapshot
from tasks.storage.store import AuditStore, PoolRecord
from tasks.synthetic.mimic_iv_ed import write_ed_cohort
from tasks.training.masks import pool_masks
from tasks.training.pool import training_patients

N_MODELS = 16
N_TARGETS = 4
MISSING = (1, 9)  # one target and one reference model never finished
POOL = "numerics-pool"
F16_MAX = float(np.finfo(np.float16).max)  # 65504


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("numerics")
    write_ed_cohort(tmp / "raw", 60, 7)
    snap = build_snapshot(get_dataset("mimic-iv-ed"), tmp / "raw", tmp / "results", load_or_create_secret())
    records = snap.records
    train_idx, order, codes = training_patients(records)
    labels = snap.labels()
    n = len(records)
    masks = pool_masks(len(order), 0, N_MODELS)
    store = AuditStore(tmp / "audit.duckdb")
    store.register_snapshot(snap)
    store.ensure_pool(
        PoolRecord(POOL, snap.dataset, snap.version, "mlp", {}, {}, 0, 1, N_TARGETS, "binary_logit", "test", len(order)), order
    )
    store.store_masks(POOL, masks)

    # Special training records (by position in train_idx), chosen from different patients.
    first_of_patient = np.unique(codes, return_index=True)[1]
    special = dict(zip(("inf_all", "inf_some", "zero_var", "perfect", "saturated", "nan_some", "huge"), first_of_patient[:7], strict=True))
    rng = np.random.default_rng(0)
    y = labels[:, 0] >= 0.5
    sign = np.where(y, 1.0, -1.0)  # binary_logit: score = z if y else -z, so logits are written as sign * score
    effect = rng.standard_t(3, n) * 0.5
    for m in range(N_MODELS):
        if m in MISSING:
            continue
        is_in = np.zeros(n, dtype=bool)
        is_in[train_idx] = masks[m][codes]
        score = rng.normal(0.0, 1.0, n) + np.where(is_in, effect, 0.0)
        z = sign * score
        z = z.astype(np.float16).astype(np.float64)  # every model is a float16 head: coarse grid, ties
        t = train_idx
        z[t[special["inf_all"]]] = np.inf if m % 2 else -np.inf  # +-inf in every model -> too few models
        if m % 3 == 0:
            z[t[special["inf_some"]]] = np.inf  # +-inf in some models -> fewer models for this record
        if m % 4 == 0:
            z[t[special["nan_some"]]] = np.nan
        z[t[special["zero_var"]]] = 1.5  # the same logit in every model
        in_p = is_in[t[special["perfect"]]]
        z[t[special["perfect"]]] = sign[t[special["perfect"]]] * (3.0 if in_p else -3.0)  # constant IN, constant OUT
        in_s = is_in[t[special["saturated"]]]
        sat = F16_MAX if in_s else float(np.nextafter(np.float16(F16_MAX), np.float16(0)))  # float16 saturated heads
        z[t[special["saturated"]]] = sign[t[special["saturated"]]] * sat
        with np.errstate(over="ignore"):
            z[t[special["huge"]]] = sign[t[special["huge"]]] * np.float16(np.float32(1e5))  # overflows float16 -> inf
        logits = z[:, None, None]
        scores, flags = get_transform("binary_logit")(logits, labels)
        probs, _ = get_transform("rmia_probability")(logits, labels)
        shard = tmp / f"model_{m}.parquet"
        pq.write_table(
            pa.table(
                {
                    "record_idx": np.arange(n, dtype=np.int64),
                    "logits": pa.array(list(z.astype(np.float32)[:, None]), type=pa.list_(pa.float32())),
                }
            ),
            shard,
        )
        meta = {
            "seed": m,
            "n_train_records": int(is_in.sum()),
            "train_seconds": 0.0,
            "epochs": 1,
            "checkpoint": "",
            "device": "cpu",
            "worker": "test",
            "code_version": "test",
        }
        assert store.load_model_shard(POOL, m, shard, meta, scores, probs, flags)

    models = list(range(N_MODELS))  # the missing models included: they must simply not count
    result = analyze_pool(
        store, snap, POOL, models, N_TARGETS, 1, AttackConfig(), ReportConfig(bootstrap_samples=100, min_cell=2), block_size=40
    )
    store.start_audit("a1", POOL, snap.dataset, snap.version, N_MODELS, N_TARGETS, {}, None)
    store_result(store, result, "a1", POOL, list(snap.attributes))
    store.finish_audit("a1", result.headline)
    pos = {k: int(train_idx[v]) for k, v in special.items()}
    yield {"store": store, "result": result, "special": pos, "n_train": len(train_idx)}
    store.close()


def _row(result, record_idx: int) -> pd.Series:
    rs = result.record_stats
    return rs[rs["record_idx"] == record_idx].iloc[0]


def test_degenerate_records_are_flagged_and_counted(audited: dict) -> None:
    res, sp = audited["result"], audited["special"]
    inf_all = _row(res, sp["inf_all"])
    assert inf_all["flag"] == "too_few_models" and inf_all["n_in"] + inf_all["n_out"] == 0 and np.isnan(inf_all["auc"])
    assert _row(res, sp["huge"])["flag"] == "too_few_models"  # float16 overflow to inf in every model
    zero = _row(res, sp["zero_var"])
    assert zero["flag"] == "zero_variance" and np.isnan(zero["auc"]) and np.isnan(zero["auc_se"])
    for name in ("perfect", "saturated"):  # constant IN above constant OUT: perfectly separable, SE 0
        r = _row(res, sp[name])
        assert r["flag"] == "zero_variance" and r["auc"] == 1.0 and r["auc_se"] == 0.0, name
    live = N_MODELS - len(MISSING)
    assert _row(res, sp["inf_some"])["n_in"] + _row(res, sp["inf_some"])["n_out"] == live - len(
        [m for m in range(0, N_MODELS, 3) if m not in MISSING]
    )
    assert _row(res, sp["nan_some"])["flag"] == ""
    normal = res.record_stats[res.record_stats["flag"] == ""]
    assert len(normal) > 50 and normal["auc"].between(0.5, 1).all() and np.isfinite(normal["auc_se"]).all()
    assert (normal["n_in"] + normal["n_out"] <= live).all()

    h = res.headline
    n_flagged = int((res.record_stats["flag"] != "").sum())
    assert h["n_degenerate_records"] == n_flagged >= 5
    assert h["n_degenerate_by_flag"] == {"too_few_models": 2, "zero_variance": 3}
    assert sum(h["n_degenerate_by_flag"].values()) == n_flagged
    assert h["n_records"] == audited["n_train"]
    assert h["n_models_without_scores"] == len(MISSING) and h["models_without_scores"] == list(MISSING)


def test_attacks_and_ablation_survive_missing_models(audited: dict) -> None:
    res = audited["result"]
    ar = res.attack_results
    assert set(ar["attack"]) >= {"lira_online", "lira_offline", "lira_online_fixed_var", "lira_offline_fixed_var", "loss", "rmia_online"}
    missing_target = ar[ar["target_model"] == MISSING[0]]
    assert len(missing_target) and missing_target["auc"].isna().all()  # no scores: NaN (stored NULL), not a crash
    assert ar[ar["target_model"] != MISSING[0]]["auc"].notna().all()
    params = {a: json.loads(p) for a, p in zip(ar["attack"], ar["params"], strict=True)}
    assert params["lira_online_fixed_var"]["fix_variance"] is True and "sd_in_global" in params["lira_online_fixed_var"]
    assert params["rmia_offline"]["online"] is False and 0.0 <= params["rmia_offline"]["a"] <= 1.0
    assert params["rmia_online"]["gamma"] == 1.0 and params["rmia_online"]["n_population"] == 500
    assert params["lira_online"]["n_reference_models"] == N_MODELS - N_TARGETS - 1  # model 9 has no scores
    ab = res.model_count_ablation
    assert set(ab["scope"]) == {"all", "top1pct"} and (ab["n_models"] <= N_MODELS).all()
    assert (ab["se_median"].dropna() > 0).all() and ab[
        "se_median"
    ].notna().any()  # flagged (zero-variance, SE 0) records are left out of the ablation
    h = res.headline
    if h["se_median_at_pool_size"] is not None:  # None when the few top-1% records lack c // 2 models per side
        assert h["se_n_models"] == ab["n_models"].max() and isinstance(h["pool_big_enough"], bool)


def test_no_nan_reaches_a_result_table_and_views_answer(audited: dict) -> None:
    store = audited["store"]
    tables = ("record_stats", "patient_stats", "subgroup_stats", "attack_results", "attack_roc_curves", "model_count_stats")
    for table in tables:
        assert store.query(f"SELECT count(*) AS n FROM {table}")["n"][0] > 0, table
        cols = store.query(f"DESCRIBE {table}")
        for col in cols.loc[cols["column_type"] == "DOUBLE", "column_name"]:
            assert store.query(f'SELECT count(*) AS n FROM {table} WHERE isnan("{col}")')["n"][0] == 0, (table, col)
    assert store.query("SELECT count(*) AS n FROM attack_results, unnest(map_values(tpr_at_fpr)) AS u(v) WHERE isnan(v)")["n"][0] == 0
    assert store.query("SELECT count(*) AS n FROM attack_results WHERE auc IS NULL")["n"][0] > 0  # the missing target
    headline = json.loads(store.query("SELECT headline::VARCHAR AS h FROM audits")["h"][0])
    assert headline["n_degenerate_records"] == audited["result"].headline["n_degenerate_records"]
    for view in ("record_risk", "patient_risk", "subgroup_risk", "attack_summary", "attack_roc", "model_count_ablation", "audit_history"):
        assert len(store.query(f"SELECT * FROM {view}")) > 0, view
    roc = store.query("SELECT attack, level, fpr, tpr_mean, tpr_std FROM attack_roc")
    assert roc["fpr"].between(0, 1).all()
    abl = store.query("SELECT * FROM model_count_ablation")
    assert {"n_models", "scope", "se_median", "se_p90", "se_max", "auc_median", "n_records"} <= set(abl.columns)


def test_old_database_with_attack_roc_table_is_migrated(tmp_path: Path) -> None:
    import duckdb

    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "CREATE TABLE attack_roc (audit_id VARCHAR, pool_key VARCHAR, attack VARCHAR, level VARCHAR, "
            "fpr DOUBLE, tpr_mean DOUBLE, tpr_std DOUBLE)"
        )
        con.execute("INSERT INTO attack_roc VALUES ('a', 'p', 'loss', 'record', 0.1, 0.2, 0.0)")
    with AuditStore(db) as store:
        assert store.query("SELECT count(*) AS n FROM attack_roc_curves")["n"][0] == 1
        kinds = store.query("SELECT table_name, table_type FROM information_schema.tables WHERE table_name = 'attack_roc'")
        assert kinds["table_type"].tolist() == ["VIEW"]

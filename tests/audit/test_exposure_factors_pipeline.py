"""Who is exposed and why, through the real pipeline pieces on a cohort of each modality.

Synthetic cohorts (tabular ED stays, CheXpert images, PTB-XL ECGs) are written in their published layouts
and ingested for real (contracts, quarantine, snapshot); the DuckDB store, ``analyze_pool``,
``store_result``, the report and ``medaudit explain`` run as in an audit. Only the shadow models are
simulated (no training, to stay within the test budget): each model's score of each training record is
drawn with known structure, so the ground truth is known. Planted: the writers' atypical records
(``_synthetic_truth.csv``: the OUT models fit them badly, the IN models memorise them) and the records
carrying a rare label (training prevalence < 5%: memorised too). PTB-XL's five superclasses are all
common, so a test-only wrapper makes HYP rare by dropping its codes from most ECGs. The null cohort draws
every record's memorisation independently of labels and fit. Real training on the demos is covered by
tests/e2e/test_demo_end_to_end.py and the heavy label-group demo test.
"""

from __future__ import annotations

import ast
import io
import re
import stat
from contextlib import redirect_stdout
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from tasks.audit.pool_audit import analyze_pool, store_result
from tasks.config import AttackConfig, ReportConfig
from tasks.datasets import get_dataset
from tasks.ingest.pseudonym import load_or_create_secret
from tasks.ingest.snapshot import build_snapshot
from tasks.report.pool_audit import write_report
from tasks.risk.exposure_factors import RARE_PREVALENCE, enrichment, label_prevalence
from tasks.storage.store import AuditStore, PoolRecord
from tasks.synthetic import get_synthetic_writer
from tasks.synthetic.cohort import ATYPICAL, TRUTH_FILE
from tasks.training.masks import pool_masks
from tasks.training.pool import training_patients

N_MODELS = 24
N_TARGETS = 2  # held-out targets for the aggregate attacks
POOL = "exposure-pool"
# patients per cohort, adapter options; ED stays are one record each, CXR patients have several images
COHORTS = {"mimic-iv-ed": (400, {}), "chexpert": (60, {"image_size": 16}), "ptb-xl": (150, {})}
ED_ATYPICAL = "atypical_stay"


def _make_hyp_rare(raw: Path, keep_share: float = 0.35) -> None:
    """Test-only wrapper: keep PTB-XL's HYP statements on a third of their ECGs only (~3%: a rare diagnosis)."""
    statements = pd.read_csv(raw / "scp_statements.csv", index_col=0)
    hyp = set(statements.index[statements["diagnostic_class"] == "HYP"])
    db = pd.read_csv(raw / "ptbxl_database.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(11)
    for i, text in enumerate(db["scp_codes"]):
        try:
            codes = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            continue  # the writer's planted unparseable row stays as it is
        if isinstance(codes, dict) and hyp & codes.keys() and rng.random() > keep_share:
            db.loc[i, "scp_codes"] = str({k: v for k, v in codes.items() if k not in hyp})
    db.to_csv(raw / "ptbxl_database.csv", index=False)


@pytest.fixture(scope="module", params=sorted(COHORTS))
def cohort(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    dataset = request.param
    n_patients, options = COHORTS[dataset]
    tmp = tmp_path_factory.mktemp(dataset)
    raw = tmp / "raw"
    get_synthetic_writer(dataset)(raw, n_patients, 0)
    if dataset == "ptb-xl":
        _make_hyp_rare(raw)
    snap = build_snapshot(get_dataset(dataset, options), raw, tmp / "snapshots", load_or_create_secret())
    truth = pd.read_csv(raw / TRUTH_FILE)
    planted = truth[truth["plant"].isin([ATYPICAL, ED_ATYPICAL])]
    rows = set(zip(planted.get("source_file", pd.Series(["master_dataset.csv"] * len(planted))), planted["source_row"], strict=True))
    rec = snap.records
    atypical = np.array([(f, r) in rows for f, r in zip(rec["source_file"], rec["source_row"], strict=True)])
    return {"dataset": dataset, "snap": snap, "atypical": atypical, "tmp": tmp}


def _audit(cohort: dict, planted: bool, folder: str, n_targets: int = N_TARGETS) -> dict:
    """Simulated pool on the real snapshot -> analyze_pool -> store -> report; returns the pieces."""
    snap = cohort["snap"]
    rec = snap.records
    train_idx, order, codes = training_patients(rec)
    n = len(rec)
    labels = snap.labels()
    train = (rec["split"] == "train").to_numpy()
    rare = label_prevalence(labels, train) < RARE_PREVALENCE  # the records whose rarest label is rare
    rng = np.random.default_rng(5)
    fit = rng.normal(3.0, 1.0, n)
    if planted:
        fit[cohort["atypical"]] -= 4.0
        gain = np.where(cohort["atypical"] | rare, 3.0, 0.1)
    else:
        gain = rng.exponential(0.8, n)
    masks = pool_masks(len(order), 0, N_MODELS)
    results = cohort["tmp"] / folder
    store = AuditStore(results / "medaudit.duckdb")
    store.register_snapshot(snap)
    pool = PoolRecord(POOL, snap.dataset, snap.version, "simulated", {}, {}, 0, 1, n_targets, "simulated", "test", len(order))
    store.ensure_pool(pool, order)
    store.store_masks(POOL, masks)
    shard = cohort["tmp"] / f"{folder}_logits.parquet"
    logits = pa.array([[0.0]] * n, type=pa.list_(pa.float32()))
    meta = {
        "seed": 0,
        "n_train_records": 0,
        "train_seconds": 0.0,
        "epochs": 0,
        "checkpoint": "",
        "device": "cpu",
        "worker": "t",
        "code_version": "t",
    }
    for m in range(N_MODELS):
        is_in = np.zeros(n, dtype=bool)
        is_in[train_idx] = masks[m][codes]
        score = fit + gain * is_in + rng.normal(0.0, 1.0, n)
        pq.write_table(pa.table({"record_idx": np.arange(n, dtype=np.int64), "logits": logits}), shard)
        prob = 1.0 / (1.0 + np.exp(-score))
        assert store.load_model_shard(POOL, m, shard, meta, score[:, None], prob[:, None], np.full(n, "", dtype=object))
    report = ReportConfig(bootstrap_samples=100, min_cell=5, top_fraction=0.1)
    result = analyze_pool(store, snap, POOL, list(range(N_MODELS)), n_targets, 1, AttackConfig(), report)
    store.start_audit("a-" + folder, POOL, snap.dataset, snap.version, N_MODELS, n_targets, {}, None)
    store_result(store, result, "a-" + folder, POOL, list(snap.attributes))
    store.finish_audit("a-" + folder, result.headline)
    store.close()
    files = write_report(result, results / "report", dataset=snap.dataset, pool_key=POOL, audit_id="a-" + folder, min_cell=5, threshold=0.9)
    return {"result": result, "results": results, "files": files, "rare": rare[train_idx], "atypical": cohort["atypical"][train_idx]}


def test_planted_rare_labels_and_atypical_records_are_over_represented_among_the_exposed(cohort: dict) -> None:
    run = _audit(cohort, planted=True, folder="planted")
    res = run["result"]
    tests = res.exposure_tests.set_index(["level", "factor"])
    atyp = tests.loc[("record", "atypicality")]
    assert atyp["p_value"] < 0.01 and atyp["observed"] > 2.5 * atyp["expected"], (cohort["dataset"], atyp.to_dict())
    assert atyp["spearman_rho"] > 0  # a few planted records among many: the rank correlation is weak, the decile test is not
    assert tests.loc[("patient", "atypicality"), "p_value"] < 0.01
    if cohort["dataset"] != "mimic-iv-ed":  # the ED task's one binary outcome has no rare class
        for level in ("record", "patient"):
            rare = tests.loc[(level, "rarity")]
            assert rare["p_value"] < 1e-3 and rare["observed"] > 2 * rare["expected"], (level, rare)
    # typical records of common labels are not over-represented among the exposed records
    stats = res.record_stats
    exposed = (stats["auc"] >= 0.9).to_numpy()
    assert enrichment(~run["rare"] & ~run["atypical"], exposed)["p_value"] > 0.5
    # the most atypical decile holds the planted atypical records
    top = stats["atypicality"] >= stats["atypicality"].quantile(0.9)
    assert run["atypical"][top.to_numpy()].sum() >= 0.8 * run["atypical"].sum()

    sub = res.subgroups
    assert set(sub["kind"]) >= {"demographic", "rarity", "atypicality"}
    if cohort["snap"].task.kind == "multilabel":  # overlapping label groups, per label, at both levels
        labels = sub[sub["kind"] == "label"]
        assert set(labels["level"]) == {"patient", "record"} and labels["chi2_p"].isna().all()
        rare_rows = labels[(labels["level"] == "record") & labels["group"].isin(_rare_labels(cohort))]
        assert (rare_rows["pearson_residual"] > 0).all() and len(rare_rows)

    with duckdb.connect(str(run["results"] / "medaudit.duckdb"), read_only=True) as con:
        rr = con.execute("SELECT label_prevalence, atypicality, auc_crossfit, label_set FROM record_risk").df()
        assert len(rr) == len(stats) and rr["label_prevalence"].notna().all() and rr["atypicality"].notna().mean() > 0.95
        kinds = {k for (k,) in con.execute("SELECT DISTINCT kind FROM subgroup_risk").fetchall()}
        assert {"rarity", "atypicality"} <= kinds
        assert con.execute("SELECT count(*) FROM exposure_risk").fetchone()[0] == 4
        top_key = con.execute("SELECT patient_key FROM patient_risk ORDER BY risk DESC LIMIT 1").fetchone()[0]
    html = run["files"]["report_html"].read_text()
    assert "Who is exposed and why" in html and "atypicality" in html

    # `medaudit explain` on the most exposed patient shows why
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["explain", top_key, "--results", str(run["results"])]) == 0
    out = buf.getvalue()
    assert f"patient {top_key}" in out and "rank 1 of" in out
    assert re.search(r"atypicality [+-]\d+\.\d\d SD", out) and "rarest label prevalence" in out and "separation" in out
    plot = Path(re.search(r"IN/OUT score plot \(owner-only\): (\S+)", out).group(1))
    assert plot.stat().st_size > 0 and stat.S_IMODE(plot.stat().st_mode) == 0o600
    assert main(["explain", "no-such-key", "--results", str(run["results"])]) == 2


def _rare_labels(cohort: dict) -> list[str]:
    snap = cohort["snap"]
    train = (snap.records["split"] == "train").to_numpy()
    prev = (snap.labels()[train] > 0.5).mean(axis=0)
    return [n for n, p in zip(snap.task.label_names, prev, strict=True) if 0 < p < RARE_PREVALENCE]


def test_nothing_planted_gives_no_signal_beyond_chance(cohort: dict) -> None:
    tests = _audit(cohort, planted=False, folder="null")["result"].exposure_tests
    p = tests["p_value"].dropna()
    assert len(p) >= 2 and (p > 0.01).all(), (cohort["dataset"], tests.to_dict("records"))
    atyp = tests[tests["factor"] == "atypicality"]
    assert ((atyp["spearman_lo"] <= 0.05) & (atyp["spearman_hi"] >= -0.05)).all(), atyp


def test_a_pool_without_held_out_targets_still_audits(cohort: dict) -> None:
    """n_targets = 0 (every model a reference): record, patient and subgroup risk, no aggregate-attack rows."""
    if cohort["dataset"] != "mimic-iv-ed":
        pytest.skip("one cohort is enough for the wiring")
    res = _audit(cohort, planted=True, folder="no-targets", n_targets=0)["result"]
    assert res.attack_results.empty and res.attack_summary.empty
    assert res.headline["n_targets"] == 0 and res.headline["lira_auc_mean"] is None
    assert res.patient_stats["risk_max"].notna().all() and not res.subgroups.empty

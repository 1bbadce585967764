"""`medaudit demo` end to end: real Prefect flow, Dask LocalCluster, DuckDB, great-expectations, torch."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from flows.cli import main

pytestmark = pytest.mark.slow

ARGS = ["demo", "--patients", "800", "--models", "32", "--targets", "8", "--no-progress"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    results = tmp_path_factory.mktemp("demo") / "results"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main([*ARGS, "--results", str(results)]) == 0
    first = buf.getvalue()
    buf2 = io.StringIO()
    with redirect_stdout(buf2):
        assert main([*ARGS, "--results", str(results)]) == 0
    return {"results": results, "first": first, "second": buf2.getvalue(), "db": results / "medaudit.duckdb"}


def _q(db: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(sql).df()


def test_demo_prints_headline_numbers_and_where_results_are(demo: dict) -> None:
    out = demo["first"]
    assert re.search(r"aggregate LiRA AUC\s+0\.\d{3}", out)
    assert re.search(r"patients at risk\s+\d+ of \d+ \(\d+\.\d%\) with risk >= 0\.9", out)
    assert str(demo["db"]) in out and "report.html" in out
    assert "trained now: 32" in out


def test_rerun_reuses_the_audit(demo: dict) -> None:
    """The same demo again: nothing changed, so the stored audit is shown; no model trained, no audit row added."""
    audit_id = _q(demo["db"], "SELECT audit_id FROM audits")["audit_id"][0]
    assert f"reused audit {audit_id}: unchanged since audit {audit_id}" in demo["second"]
    assert "trained now: 0" in demo["second"]
    models = _q(demo["db"], "SELECT pool_key, model_idx, count(*) AS n FROM models GROUP BY ALL")
    assert len(models) == 32 and (models["n"] == 1).all()
    assert _q(demo["db"], "SELECT count(*) AS n FROM audits")["n"][0] == 1


def test_the_papers_phenomenon(demo: dict) -> None:
    """Aggregate attack near chance, yet some patients almost perfectly exposed; planted stays on top."""
    summary = _q(demo["db"], "SELECT * FROM attack_summary WHERE attack = 'lira_online' AND level = 'record'")
    assert summary["auc_mean"][0] < 0.65
    patients = _q(demo["db"], "SELECT risk FROM patient_risk")
    assert patients["risk"].max() >= 0.95
    records = _q(demo["db"], "SELECT source_row, risk FROM record_risk WHERE risk IS NOT NULL")
    truth = pd.read_csv(demo["results"] / "demo_data" / "mimic-iv-ed" / "n800_seed0" / "_synthetic_truth.csv")
    atypical = records.merge(truth[truth["plant"] == "atypical_stay"], on="source_row")
    top5 = records["risk"].quantile(0.95)
    share_top = (atypical["risk"] >= top5).mean()
    # 5% of all records are in the top 5%; the planted atypical stays are there at least 5x as often.
    assert len(atypical) >= 5 and share_top >= 0.25, (len(atypical), share_top)
    assert atypical["risk"].median() > records["risk"].quantile(0.85)


def test_sql_views_answer_the_common_questions(demo: dict, capsys: pytest.CaptureFixture[str]) -> None:
    db = demo["db"]
    sub = _q(db, "SELECT * FROM subgroup_risk WHERE level = 'patient' AND attribute = 'race'")
    assert set(sub["group"]) >= {"White", "Black"}
    assert {"patients", "records"} <= set(sub.columns) or {"units", "records"} <= set(sub.columns)
    assert sub["share_lo"].le(sub["share_above"]).all() and sub["share_above"].le(sub["share_hi"]).all()
    pr = _q(db, "SELECT patient_key, risk, attributes['race'] AS race FROM patient_risk")
    assert pr["race"].notna().all()
    assert _q(db, "SELECT count(*) AS n FROM record_risk")["n"][0] > 1000
    assert main(["sql", "--results", str(demo["results"]), "SELECT count(*) AS n FROM models"]) == 0
    assert "32" in capsys.readouterr().out


def test_statistics_are_sane(demo: dict) -> None:
    rr = _q(demo["db"], "SELECT * FROM record_risk")
    scored = rr[rr["flag"] == ""]
    assert scored["risk"].between(0.5, 1).all()
    # analytic and empirical AUC agree on average
    assert abs(scored["auc_raw"].mean() - scored["auc_empirical"].mean()) < 0.03
    assert (scored["n_in"] + scored["n_out"] == 32).all()
    for table in ("record_stats", "patient_stats", "subgroup_stats", "attack_results"):
        cols = _q(demo["db"], f"DESCRIBE {table}")
        for col in cols.loc[cols["column_type"] == "DOUBLE", "column_name"]:
            assert _q(demo["db"], f'SELECT count(*) AS n FROM {table} WHERE isnan("{col}")')["n"][0] == 0, (table, col)


def test_reports_and_plots_are_written(demo: dict) -> None:
    reports = list((demo["results"] / "reports" / "mimic-iv-ed").glob("*/report.html"))
    assert reports
    folder = reports[0].parent
    for name in ("risk_survival.png", "attack_roc.png", "subgroup_risk.png", "subgroup_risk.csv", "attack_summary.csv"):
        assert (folder / name).stat().st_size > 0
    assert (folder.stat().st_mode & 0o077) == 0  # owner-only


def test_no_raw_patient_id_in_results_logs_or_artifacts(demo: dict) -> None:
    raw = pd.read_csv(
        demo["results"] / "demo_data" / "mimic-iv-ed" / "n800_seed0" / "master_dataset.csv", usecols=["subject_id", "stay_id"]
    )
    raw_ids = set(raw["subject_id"].astype(str)) | set(raw["stay_id"].astype(str))
    pattern = re.compile(r"(?<![\d.])\d{8}(?![\d.])")  # whole 8-digit tokens, not digits inside floats

    def leaked(text: str) -> set[str]:
        return set(pattern.findall(text)) & raw_ids

    db = demo["db"]
    tables = _q(db, "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'")["table_name"]
    for t in tables:
        text = _q(db, f"SELECT * FROM {t} LIMIT 200000").astype(str).to_csv()
        assert not leaked(text), t
    for f in (demo["results"] / "reports").rglob("*"):
        if f.is_file() and f.suffix in {".csv", ".html"}:
            assert not leaked(f.read_text(errors="ignore")), f
    assert not leaked(demo["first"] + demo["second"])

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        logs = client.read_logs()
    assert artifacts, "the flow publishes artifacts"
    assert {"audit-headline", "subgroup-risk"} <= {a.key for a in artifacts}
    for a in artifacts:
        assert not leaked(str(a.data)), a.key
    for log in logs:
        assert not leaked(log.message)


def test_record_risk_carries_rarity_and_atypicality_and_explain_shows_why(demo: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #18: rarity and cross-fitted atypicality per record; `medaudit explain` on the most exposed patient."""
    rr = _q(demo["db"], "SELECT source_row, risk, label_prevalence, atypicality, auc_crossfit FROM record_risk")
    assert rr["label_prevalence"].between(0, 1).all() and rr["atypicality"].notna().mean() > 0.99
    truth = pd.read_csv(demo["results"] / "demo_data" / "mimic-iv-ed" / "n800_seed0" / "_synthetic_truth.csv")
    atypical = rr.merge(truth[truth["plant"] == "atypical_stay"], on="source_row")
    # the planted atypical stays are what the OUT models fit worst for their outcome
    assert atypical["atypicality"].median() > rr["atypicality"].quantile(0.9)
    tests = _q(demo["db"], "SELECT level, factor, observed, expected, p_value FROM exposure_risk").set_index(["level", "factor"])
    assert len(tests) == 4
    rec = tests.loc[("record", "atypicality")]
    assert rec["observed"] > 2 * rec["expected"] and rec["p_value"] < 0.01, rec.to_dict()

    top = _q(demo["db"], "SELECT patient_key FROM patient_risk ORDER BY risk DESC, patient_key LIMIT 1")["patient_key"][0]
    capsys.readouterr()
    assert main(["explain", top, "--results", str(demo["results"])]) == 0
    out = capsys.readouterr().out
    assert f"patient {top}" in out and "rank 1 of " in out
    assert "rarest label prevalence" in out and re.search(r"atypicality [+-]\d+\.\d\d SD", out) and "separation" in out
    assert "master_dataset.csv, row " in out
    plot = Path(re.search(r"IN/OUT score plot \(owner-only\): (\S+)", out).group(1))
    assert plot.stat().st_size > 0 and (plot.stat().st_mode & 0o077) == 0
    cohort = demo["results"] / "demo_data" / "mimic-iv-ed" / "n800_seed0"
    raw = pd.read_csv(cohort / "master_dataset.csv", usecols=["subject_id", "stay_id"])
    raw_ids = set(raw["subject_id"].astype(str)) | set(raw["stay_id"].astype(str))
    assert not set(re.findall(r"(?<![\d.])\d{8}(?![\d.])", out)) & raw_ids

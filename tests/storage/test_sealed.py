"""Sealed results: every way out of `medaudit sql` is refused, and what medaudit writes is owner-only."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tasks.storage.store import AuditStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    with AuditStore(results / "medaudit.duckdb") as store:
        store.start_audit("a1", "pool1", "mimic-iv-ed", "v1", 8, 2, {"dataset": "mimic-iv-ed"}, None)
        store.con.execute(
            "INSERT INTO patient_stats (audit_id, pool_key, patient_key, n_records, n_scored, risk_max) "
            "VALUES ('a1', 'pool1', 'k1', 1, 1, 0.97), ('a1', 'pool1', 'k2', 1, 1, 0.5)"
        )
        store.finish_audit("a1", {"n_patients": 2})
    (results / "reports").mkdir()
    (results / "reports" / "patient_risk.csv").write_text("patient_key,risk\nk1,0.97\n")  # a file next to the database
    return results


WAYS_OUT = [
    "COPY (SELECT * FROM patient_stats) TO '{out}/leak.csv'",
    "COPY patient_stats TO '{out}/leak.parquet' (FORMAT parquet)",
    "EXPORT DATABASE '{out}/dump'",
    "ATTACH '{out}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "SELECT * FROM read_csv('{out}/../results/reports/patient_risk.csv')",
    "SELECT * FROM read_parquet('{out}/x.parquet')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('{out}/*')",
    "CALL read_csv('/etc/hostname')",
]


@pytest.mark.parametrize("query", WAYS_OUT)
def test_every_way_out_of_sql_is_refused(query: str, results: Path, tmp_path: Path, helpers: SimpleNamespace, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code, stdout = helpers.run_cli(["sql", "--results", str(results), query.format(out=out)])
    err = capsys.readouterr().err
    assert code == 2, stdout
    assert "refused" in err and "--csv FILE or --parquet FILE" in err, err
    assert err.count("\n") == 1, "one clear line"
    assert list(out.iterdir()) == [], "nothing written"


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM models",
        "DELETE FROM patient_stats",
        "UPDATE audits SET headline = NULL",
        "DROP TABLE audits",
        "INSERT INTO audits (audit_id) VALUES ('x')",
        "CREATE TABLE t AS SELECT 1",
        "ALTER TABLE audits ADD COLUMN z INT",
    ],
)
def test_writes_get_a_read_only_message(query: str, results: Path, helpers: SimpleNamespace, capsys) -> None:
    assert helpers.run_cli(["sql", "--results", str(results), query])[0] == 2
    err = capsys.readouterr().err
    assert "read-only" in err and "Binder Error" not in err, err


@pytest.mark.parametrize("query", ["", "   ", "-- only a comment", "/* block */"])
def test_empty_queries_get_a_clear_message(query: str, results: Path, helpers: SimpleNamespace, capsys) -> None:
    assert helpers.run_cli(["sql", "--results", str(results), query])[0] == 2
    err = capsys.readouterr().err
    assert "the query is empty" in err and "AttributeError" not in err


def test_queries_and_owner_only_exports(results: Path, tmp_path: Path, helpers: SimpleNamespace) -> None:
    code, out = helpers.run_cli(
        ["sql", "--results", str(results), "SELECT patient_key, risk_max FROM patient_stats ORDER BY risk_max DESC"]
    )
    assert code == 0 and out.splitlines()[1].split() == ["k1", "0.97"]
    os.umask(0o022)  # even under a permissive umask, exports are owner-only
    for flag, name in (("--csv", "x.csv"), ("--parquet", "x.parquet")):
        path = tmp_path / name
        path.write_text("old")
        os.chmod(path, 0o644)  # an existing readable file is replaced, not reused
        code, out = helpers.run_cli(["sql", "--results", str(results), "SELECT * FROM patient_stats", flag, str(path)])
        assert code == 0 and "2 rows written" in out
        assert _mode(path) == 0o600, name
        frame = pd.read_csv(path) if flag == "--csv" else pd.read_parquet(path)
        assert sorted(frame["patient_key"]) == ["k1", "k2"]


def test_results_are_owner_only_and_readers_refuse_an_open_database(tmp_path: Path, helpers: SimpleNamespace, capsys) -> None:
    os.umask(0o022)  # as a library user's process: the store and the report seal themselves
    results = tmp_path / "fresh"
    AuditStore(results / "medaudit.duckdb").close()
    assert _mode(results) == 0o700 and _mode(results / "medaudit.duckdb") == 0o600
    os.chmod(results / "medaudit.duckdb", 0o644)
    assert helpers.run_cli(["sql", "--results", str(results), "SELECT 1"])[0] == 2
    assert "readable by others (mode 644)" in capsys.readouterr().err
    assert helpers.run_cli(["gate", "--results", str(results)])[0] == 2
    assert "chmod 600" in capsys.readouterr().err
    AuditStore(results / "medaudit.duckdb").close()  # the writer seals what it owns
    assert _mode(results / "medaudit.duckdb") == 0o600
    # the CLI itself runs owner-only: what any command creates is 0600/0700
    helpers.run_cli(["datasets"])
    made = tmp_path / "made-by-cli.txt"
    made.write_text("x")
    assert _mode(made) == 0o600
    assert _mode(Path(os.environ["PREFECT_HOME"])) == 0o700


@pytest.mark.slow
def test_a_real_audit_writes_only_owner_only_files(demo_audit: dict, helpers: SimpleNamespace) -> None:
    results = demo_audit["results"]
    loose = [p for p in results.rglob("*") if _mode(p) & 0o077]
    assert loose == [], [f"{p} {_mode(p):o}" for p in loose[:5]]
    report = Path(demo_audit["result"]["files"]["report_html"])
    assert _mode(report) == 0o600 and _mode(report.parent) == 0o700

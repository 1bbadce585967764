"""The model audit's tables are named model_audit*; a database written with the old target_* names is
migrated in place on the next writable open, and the old names stay readable as deprecated views."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tasks.storage.store import DEPRECATED_VIEWS, AuditStore

# The model audit's part of the schema as it was written before the rename (no p_value / q_value yet,
# the oldest such files), with one finished audit in it.
OLD_SCHEMA = """
CREATE TABLE target_audits (
    audit_id VARCHAR PRIMARY KEY, pool_key VARCHAR, dataset VARCHAR, dataset_version VARCHAR, target_name VARCHAR,
    target_kind VARCHAR, target_digest VARCHAR, members_digest VARCHAR, n_references INTEGER, variance VARCHAR,
    config JSON, headline JSON, started_at TIMESTAMP, finished_at TIMESTAMP, flow_run_id VARCHAR);
CREATE TABLE target_record_stats (
    audit_id VARCHAR, record_idx BIGINT, member BOOLEAN, score DOUBLE, lira_offline DOUBLE, risk DOUBLE,
    rmia_offline DOUBLE, n_out INTEGER);
CREATE TABLE target_patient_stats (
    audit_id VARCHAR, patient_key VARCHAR, member BOOLEAN, n_records INTEGER, n_member_records INTEGER,
    risk DOUBLE, risk_mean DOUBLE, attributes MAP(VARCHAR, VARCHAR));
CREATE TABLE target_attack_results (
    audit_id VARCHAR, attack VARCHAR, level VARCHAR, auc DOUBLE, n_members BIGINT, n_non_members BIGINT,
    tpr_at_fpr MAP(DOUBLE, DOUBLE));
CREATE VIEW target_patient_risk AS SELECT t.audit_id, t.target_name, s.* EXCLUDE (audit_id)
    FROM target_patient_stats s JOIN target_audits t USING (audit_id);
INSERT INTO target_audits (audit_id, target_name, target_kind, headline, started_at, finished_at)
    VALUES ('a1', 'my-model', 'logits', '{"n_member_patients_at_risk": 3}', now(), now());
INSERT INTO target_patient_stats VALUES ('a1', 'p1', true, 2, 2, 0.97, 0.8, MAP {'sex': 'F'});
INSERT INTO target_attack_results VALUES ('a1', 'lira_offline', 'patient', 0.71, 10, 12, MAP {0.001: 0.1, 0.01: 0.2});
"""


def _kinds(db: Path) -> dict[str, str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.sql("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'main'").fetchall())


def test_a_new_database_has_model_audit_tables_and_deprecated_views(tmp_path: Path) -> None:
    db = tmp_path / "medaudit.duckdb"
    AuditStore(db).close()
    kinds = _kinds(db)
    assert all(kinds[new] in ("BASE TABLE", "VIEW") for new in DEPRECATED_VIEWS.values())
    assert kinds["model_audits"] == "BASE TABLE" and kinds["model_audit_summary"] == "VIEW"
    assert all(kinds[old] == "VIEW" for old in DEPRECATED_VIEWS)


def test_a_database_written_with_the_old_names_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "medaudit.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(OLD_SCHEMA)
    for _ in range(2):  # migrating is idempotent: a second open finds views under the old names and leaves them
        AuditStore(db).close()
    kinds = _kinds(db)
    renamed = ("model_audits", "model_audit_record_stats", "model_audit_patient_stats", "model_audit_attack_results")
    assert [kinds[t] for t in renamed] == ["BASE TABLE"] * 4
    assert all(kinds[old] == "VIEW" for old in DEPRECATED_VIEWS)
    with AuditStore(db, read_only=True) as store:
        con = store.con
        new = con.sql("SELECT target_name, patient_key, risk, attributes['sex'], p_value FROM model_audit_patient_risk").fetchall()
        assert new == [("my-model", "p1", pytest.approx(0.97), "F", None)]  # p_value added on open, NULL for old rows
        assert con.sql("SELECT * FROM target_patient_risk").fetchall() == con.sql("SELECT * FROM model_audit_patient_risk").fetchall()
        summary = con.sql("SELECT attack, auc, tpr_at_1e3, n_member_patients_at_risk FROM model_audit_summary").fetchall()
        assert summary == [("lira_offline", pytest.approx(0.71), pytest.approx(0.1), 3)]
        assert con.sql("SELECT * FROM target_audit_summary").fetchall() == con.sql("SELECT * FROM model_audit_summary").fetchall()


def test_the_model_audit_writes_land_under_the_new_names(tmp_path: Path) -> None:
    db = tmp_path / "medaudit.duckdb"
    row = {"pool_key": "k", "dataset": "d", "dataset_version": "v", "target_name": "m", "target_kind": "logits", "target_digest": "x"}
    row |= {"members_digest": "y", "n_references": 4, "variance": "fixed", "config": {}, "flow_run_id": ""}
    with AuditStore(db) as store:
        store.start_model_audit("a2", row)
        store.finish_model_audit("a2", {"n_member_patients_at_risk": 1})
        assert store.con.sql("SELECT audit_id, finished_at IS NOT NULL FROM model_audits").fetchall() == [("a2", True)]
        assert store.con.sql("SELECT audit_id FROM target_audits").fetchall() == [("a2",)]

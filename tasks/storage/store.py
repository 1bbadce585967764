"""The one module that touches DuckDB (design D10): schema, the single writer, block readers and SQL views.

Only the flow process writes (workers hand back Parquet shards); every write is one transaction,
so a killed writer leaves either the whole model or nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.errors import MedauditError
from tasks.storage.sealed import PRIVATE_DIR, check_private, make_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    dataset VARCHAR, version VARCHAR PRIMARY KEY, snapshot_dir VARCHAR, n_raw BIGINT,
    n_accepted BIGINT, n_quarantined BIGINT, n_patients BIGINT, manifest JSON, ingested_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS records (
    dataset_version VARCHAR, record_idx BIGINT, patient_key VARCHAR, split VARCHAR,
    labels DOUBLE[], source_file VARCHAR, source_row BIGINT, PRIMARY KEY (dataset_version, record_idx));
CREATE TABLE IF NOT EXISTS record_attributes (
    dataset_version VARCHAR, record_idx BIGINT, attribute VARCHAR, value VARCHAR);
CREATE TABLE IF NOT EXISTS quarantine (
    dataset_version VARCHAR, source_file VARCHAR, source_row BIGINT, stage VARCHAR, "column" VARCHAR, reason VARCHAR);
CREATE TABLE IF NOT EXISTS repairs (
    dataset_version VARCHAR, source_file VARCHAR, source_row BIGINT, "column" VARCHAR, rule VARCHAR,
    original DOUBLE, repaired DOUBLE, reason VARCHAR);
CREATE TABLE IF NOT EXISTS pools (
    pool_key VARCHAR PRIMARY KEY, dataset VARCHAR, dataset_version VARCHAR, architecture VARCHAR,
    arch_params JSON, recipe JSON, mask_seed BIGINT, eval_views INTEGER, n_targets INTEGER,
    score_transform VARCHAR, code_version VARCHAR, n_patients BIGINT, created_at TIMESTAMP, recipe_preset VARCHAR);
CREATE TABLE IF NOT EXISTS pool_patients (pool_key VARCHAR, patient_pos BIGINT, patient_key VARCHAR);
CREATE TABLE IF NOT EXISTS masks (pool_key VARCHAR, model_idx INTEGER, patient_pos BIGINT, is_in BOOLEAN);
CREATE TABLE IF NOT EXISTS pool_models (
    pool_key VARCHAR, model_idx INTEGER, seed UBIGINT, status VARCHAR, n_train_records BIGINT,
    train_seconds DOUBLE, train_loss DOUBLE, test_auroc DOUBLE, epochs INTEGER, checkpoint VARCHAR,
    device VARCHAR, worker VARCHAR, code_version VARCHAR, git_commit VARCHAR, finished_at TIMESTAMP,
    train_info JSON, PRIMARY KEY (pool_key, model_idx));
CREATE TABLE IF NOT EXISTS logits (
    pool_key VARCHAR, model_idx INTEGER, record_idx BIGINT, logits FLOAT[]);
CREATE TABLE IF NOT EXISTS scores (
    pool_key VARCHAR, model_idx INTEGER, record_idx BIGINT, view TINYINT, score DOUBLE, prob DOUBLE);
CREATE TABLE IF NOT EXISTS score_flags (pool_key VARCHAR, model_idx INTEGER, record_idx BIGINT, flag VARCHAR);
CREATE TABLE IF NOT EXISTS audits (
    audit_id VARCHAR PRIMARY KEY, pool_key VARCHAR, dataset VARCHAR, dataset_version VARCHAR,
    n_models INTEGER, n_targets INTEGER, config JSON, headline JSON, started_at TIMESTAMP, finished_at TIMESTAMP,
    flow_run_id VARCHAR);
CREATE TABLE IF NOT EXISTS reaudit_runs (
    run_at TIMESTAMP, dataset VARCHAR, decision VARCHAR, reason VARCHAR, dataset_version VARCHAR, pool_key VARCHAR,
    audit_key VARCHAR, previous_audit_id VARCHAR, audit_id VARCHAR, trained INTEGER, alerts JSON, flow_run_id VARCHAR);
CREATE TABLE IF NOT EXISTS record_stats (
    audit_id VARCHAR, pool_key VARCHAR, record_idx BIGINT, n_in INTEGER, n_out INTEGER, mu_in DOUBLE,
    mu_out DOUBLE, sd_in DOUBLE, sd_out DOUBLE, auc_raw DOUBLE, auc DOUBLE, auc_se DOUBLE,
    auc_empirical DOUBLE, flag VARCHAR, auc_nct_lo DOUBLE, auc_nct_hi DOUBLE, swap_p DOUBLE, swap_q DOUBLE,
    at_risk BOOLEAN, chance_above DOUBLE, label_set VARCHAR, label_prevalence DOUBLE, atypicality DOUBLE, auc_crossfit DOUBLE);
CREATE TABLE IF NOT EXISTS patient_stats (
    audit_id VARCHAR, pool_key VARCHAR, patient_key VARCHAR, n_records INTEGER, n_scored INTEGER,
    risk_max DOUBLE, risk_mean DOUBLE, attributes MAP(VARCHAR, VARCHAR), swap_p DOUBLE, swap_q DOUBLE,
    at_risk BOOLEAN, chance_above DOUBLE);
CREATE TABLE IF NOT EXISTS subgroup_stats (
    audit_id VARCHAR, pool_key VARCHAR, level VARCHAR, attribute VARCHAR, "group" VARCHAR, units BIGINT,
    records BIGINT, median_risk DOUBLE, median_lo DOUBLE, median_hi DOUBLE, n_above BIGINT,
    share_above DOUBLE, share_lo DOUBLE, share_hi DOUBLE, top_observed BIGINT, top_expected DOUBLE,
    pearson_residual DOUBLE, p_value DOUBLE, p_holm DOUBLE, chi2_p DOUBLE, suppressed BOOLEAN,
    n_at_risk BIGINT, expected_above DOUBLE, kind VARCHAR);
CREATE TABLE IF NOT EXISTS exposure_tests (
    audit_id VARCHAR, pool_key VARCHAR, level VARCHAR, factor VARCHAR, tested VARCHAR, exposed VARCHAR, n_units BIGINT,
    n_exposed BIGINT, n_in_set BIGINT, observed BIGINT, expected DOUBLE, share_exposed_in_set DOUBLE, share_lo DOUBLE,
    share_hi DOUBLE, share_all_in_set DOUBLE, odds_ratio DOUBLE, p_value DOUBLE, spearman_n BIGINT, spearman_rho DOUBLE,
    spearman_lo DOUBLE, spearman_hi DOUBLE, spearman_p DOUBLE);
CREATE TABLE IF NOT EXISTS attack_results (
    audit_id VARCHAR, pool_key VARCHAR, attack VARCHAR, attack_version VARCHAR, level VARCHAR,
    params JSON, target_model INTEGER, auc DOUBLE, tpr_at_fpr MAP(DOUBLE, DOUBLE));
CREATE TABLE IF NOT EXISTS attack_roc_curves (
    audit_id VARCHAR, pool_key VARCHAR, attack VARCHAR, level VARCHAR, fpr DOUBLE, tpr_mean DOUBLE, tpr_std DOUBLE);
CREATE TABLE IF NOT EXISTS model_count_stats (
    audit_id VARCHAR, pool_key VARCHAR, n_models INTEGER, scope VARCHAR, se_median DOUBLE, se_p90 DOUBLE,
    se_max DOUBLE, auc_median DOUBLE, n_records BIGINT);
CREATE TABLE IF NOT EXISTS model_audits (
    audit_id VARCHAR PRIMARY KEY, pool_key VARCHAR, dataset VARCHAR, dataset_version VARCHAR, target_name VARCHAR,
    target_kind VARCHAR, target_digest VARCHAR, members_digest VARCHAR, n_references INTEGER, variance VARCHAR,
    config JSON, headline JSON, started_at TIMESTAMP, finished_at TIMESTAMP, flow_run_id VARCHAR);
CREATE TABLE IF NOT EXISTS model_audit_record_stats (
    audit_id VARCHAR, record_idx BIGINT, member BOOLEAN, score DOUBLE, lira_offline DOUBLE, risk DOUBLE,
    rmia_offline DOUBLE, n_out INTEGER);
CREATE TABLE IF NOT EXISTS model_audit_patient_stats (
    audit_id VARCHAR, patient_key VARCHAR, member BOOLEAN, n_records INTEGER, n_member_records INTEGER,
    risk DOUBLE, risk_mean DOUBLE, attributes MAP(VARCHAR, VARCHAR), p_value DOUBLE, q_value DOUBLE);
CREATE TABLE IF NOT EXISTS model_audit_attack_results (
    audit_id VARCHAR, attack VARCHAR, level VARCHAR, auc DOUBLE, n_members BIGINT, n_non_members BIGINT,
    tpr_at_fpr MAP(DOUBLE, DOUBLE));
"""

# Tables renamed since a database file may have been written: (old, new). A view now carries the old name:
# `attack_roc` is the ROC view; the `target_*` names of the model audit are deprecated compatibility views
# (COMPAT_VIEWS), kept for one release.
_RENAMED_TABLES = (
    ("attack_roc", "attack_roc_curves"),
    ("target_audits", "model_audits"),
    ("target_record_stats", "model_audit_record_stats"),
    ("target_patient_stats", "model_audit_patient_stats"),
    ("target_attack_results", "model_audit_attack_results"),
)
# Columns added to a table of SCHEMA after database files were written: (table, column, type). SCHEMA's
# CREATE statement lists them too; older files get them here, so their rows read back with NULLs.
_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("pools", "recipe_preset", "VARCHAR"),
    ("model_audit_patient_stats", "p_value", "DOUBLE"),
    ("model_audit_patient_stats", "q_value", "DOUBLE"),
    # issue 13: the swap null, FDR-controlled flags and the noncentral-t record interval
    ("record_stats", "auc_nct_lo", "DOUBLE"),
    ("record_stats", "auc_nct_hi", "DOUBLE"),
    ("record_stats", "swap_p", "DOUBLE"),
    ("record_stats", "swap_q", "DOUBLE"),
    ("record_stats", "at_risk", "BOOLEAN"),
    ("record_stats", "chance_above", "DOUBLE"),
    ("patient_stats", "swap_p", "DOUBLE"),
    ("patient_stats", "swap_q", "DOUBLE"),
    ("patient_stats", "at_risk", "BOOLEAN"),
    ("patient_stats", "chance_above", "DOUBLE"),
    ("subgroup_stats", "n_at_risk", "BIGINT"),
    ("subgroup_stats", "expected_above", "DOUBLE"),
    # issue 18: rarity, atypicality and the subgroup row kind
    ("record_stats", "label_set", "VARCHAR"),
    ("record_stats", "label_prevalence", "DOUBLE"),
    ("record_stats", "atypicality", "DOUBLE"),
    ("record_stats", "auc_crossfit", "DOUBLE"),
    ("subgroup_stats", "kind", "VARCHAR"),
)

VIEWS = """
CREATE OR REPLACE VIEW latest_audits AS
    SELECT * FROM audits QUALIFY row_number() OVER (PARTITION BY pool_key ORDER BY finished_at DESC) = 1;
CREATE OR REPLACE VIEW models AS
    SELECT m.*, p.dataset, p.dataset_version, p.architecture FROM pool_models m JOIN pools p USING (pool_key);
CREATE OR REPLACE VIEW record_risk AS
    SELECT a.audit_id, p.dataset, s.pool_key, s.record_idx, r.patient_key, r.split, s.auc AS risk,
           s.auc_raw, s.auc_se, s.auc_empirical, s.n_in, s.n_out, s.mu_in, s.mu_out, s.sd_in, s.sd_out,
           s.flag, r.source_file, r.source_row, s.auc_raw AS auc_binormal_raw, s.auc_se AS auc_se_hanley_mcneil,
           s.auc_nct_lo, s.auc_nct_hi, s.swap_p, s.swap_q, s.at_risk, s.chance_above,
           s.label_set, s.label_prevalence, s.atypicality, s.auc_crossfit
    FROM record_stats s JOIN latest_audits a USING (audit_id) JOIN pools p ON p.pool_key = s.pool_key
    JOIN records r ON r.dataset_version = p.dataset_version AND r.record_idx = s.record_idx;
CREATE OR REPLACE VIEW patient_risk AS
    SELECT a.audit_id, p.dataset, s.pool_key, s.patient_key, s.n_records, s.n_scored,
           s.risk_max AS risk, s.risk_max, s.risk_mean, s.attributes, s.swap_p, s.swap_q, s.at_risk, s.chance_above
    FROM patient_stats s JOIN latest_audits a USING (audit_id) JOIN pools p ON p.pool_key = s.pool_key;
CREATE OR REPLACE VIEW subgroup_risk AS
    SELECT a.audit_id, p.dataset, s.* EXCLUDE (audit_id)
    FROM subgroup_stats s JOIN latest_audits a USING (audit_id) JOIN pools p ON p.pool_key = s.pool_key;
CREATE OR REPLACE VIEW exposure_risk AS
    SELECT a.audit_id, p.dataset, e.* EXCLUDE (audit_id)
    FROM exposure_tests e JOIN latest_audits a USING (audit_id) JOIN pools p ON p.pool_key = e.pool_key;
CREATE OR REPLACE VIEW attack_summary AS
    SELECT a.audit_id, p.dataset, r.pool_key, r.attack, r.attack_version, r.level, count(*) AS n_targets,
           avg(r.auc) AS auc_mean, coalesce(stddev_pop(r.auc), 0) AS auc_std,
           avg(r.tpr_at_fpr[0.0001]) AS tpr_at_1e4, avg(r.tpr_at_fpr[0.001]) AS tpr_at_1e3,
           avg(r.tpr_at_fpr[0.01]) AS tpr_at_1e2, avg(r.tpr_at_fpr[0.1]) AS tpr_at_1e1
    FROM attack_results r JOIN latest_audits a USING (audit_id) JOIN pools p ON p.pool_key = r.pool_key
    GROUP BY ALL;
CREATE OR REPLACE VIEW audit_history AS
    SELECT audit_id, dataset, dataset_version, pool_key, n_models, finished_at,
           CAST(headline->>'share_patients_above_threshold' AS DOUBLE) AS share_patients_above_threshold,
           CAST(headline->>'n_patients_above_threshold' AS BIGINT) AS n_patients_above_threshold,
           CAST(headline->>'lira_auc_mean' AS DOUBLE) AS lira_auc_mean,
           CAST(headline->>'risk_threshold' AS DOUBLE) AS risk_threshold,
           CAST(headline->>'se_median_at_pool_size' AS DOUBLE) AS se_median_at_pool_size,
           CAST(headline->>'pool_big_enough' AS BOOLEAN) AS pool_big_enough,
           CAST(headline->>'n_patients_expected_by_chance' AS DOUBLE) AS n_patients_expected_by_chance,
           CAST(headline->>'n_patients_at_risk' AS BIGINT) AS n_patients_at_risk,
           CAST(headline->>'fdr' AS DOUBLE) AS fdr,
           headline->>'evidence' AS evidence,
           CAST(headline->>'n_models_needed' AS INTEGER) AS n_models_needed
    FROM audits ORDER BY finished_at;
CREATE OR REPLACE VIEW reaudit_history AS
    SELECT r.run_at, r.dataset, r.decision, r.reason, coalesce(r.audit_id, r.previous_audit_id) AS audit_id,
           r.audit_id IS NOT NULL AS new_audit, r.trained, json_array_length(r.alerts) AS n_alerts,
           CAST(a.headline->>'share_patients_above_threshold' AS DOUBLE) AS share_patients_above_threshold,
           CAST(a.headline->>'n_patients_above_threshold' AS BIGINT) AS n_patients_above_threshold,
           CAST(a.headline->>'lira_auc_mean' AS DOUBLE) AS lira_auc_mean, r.dataset_version, r.pool_key, r.flow_run_id
    FROM reaudit_runs r LEFT JOIN audits a ON a.audit_id = coalesce(r.audit_id, r.previous_audit_id) ORDER BY r.run_at;
CREATE OR REPLACE VIEW attack_roc AS
    SELECT a.audit_id, p.dataset, c.pool_key, c.attack, c.level, c.fpr, c.tpr_mean, c.tpr_std
    FROM attack_roc_curves c JOIN latest_audits a USING (audit_id) JOIN pools p ON p.pool_key = c.pool_key;
CREATE OR REPLACE VIEW model_count_ablation AS
    SELECT a.audit_id, p.dataset, s.pool_key, s.n_models, s.scope, s.n_records, s.se_median, s.se_p90, s.se_max,
           s.auc_median, s.se_median <= 0.05 AS se_median_below_005
    FROM model_count_stats s JOIN latest_audits a USING (audit_id) JOIN pools p ON p.pool_key = s.pool_key;
CREATE OR REPLACE MACRO compare_audits(audit_a, audit_b) AS TABLE
    WITH thresholds AS (
        SELECT audit_id, coalesce(CAST(headline->>'risk_threshold' AS DOUBLE), 0.9) AS threshold FROM audits),
    a AS (SELECT s.patient_key, s.risk_max AS risk_a, coalesce(s.risk_max >= t.threshold, false) AS at_risk_a, s.attributes AS attrs_a
          FROM patient_stats s JOIN thresholds t USING (audit_id) WHERE s.audit_id = audit_a),
    b AS (SELECT s.patient_key, s.risk_max AS risk_b, coalesce(s.risk_max >= t.threshold, false) AS at_risk_b, s.attributes AS attrs_b
          FROM patient_stats s JOIN thresholds t USING (audit_id) WHERE s.audit_id = audit_b)
    SELECT patient_key,
           CASE WHEN a.at_risk_a IS NULL THEN 'only in B' WHEN b.at_risk_b IS NULL THEN 'only in A'
                WHEN at_risk_b AND NOT at_risk_a THEN 'newly at risk'
                WHEN at_risk_a AND NOT at_risk_b THEN 'no longer at risk'
                WHEN at_risk_a AND at_risk_b THEN 'still at risk'
                ELSE 'not at risk' END AS change,
           risk_a, risk_b, risk_b - risk_a AS risk_change, coalesce(at_risk_a, false) AS at_risk_a,
           coalesce(at_risk_b, false) AS at_risk_b, coalesce(attrs_b, attrs_a) AS attributes
    FROM a FULL OUTER JOIN b USING (patient_key);
CREATE OR REPLACE MACRO compare_subgroups(audit_a, audit_b) AS TABLE
    SELECT e.key AS attribute, e.value AS "group", count(*) AS patients,
           count(*) FILTER (WHERE c.at_risk_a) AS at_risk_a, count(*) FILTER (WHERE c.at_risk_b) AS at_risk_b,
           count(*) FILTER (WHERE c.change = 'newly at risk') AS newly_at_risk,
           count(*) FILTER (WHERE c.change = 'no longer at risk') AS no_longer_at_risk,
           median(c.risk_a) AS median_risk_a, median(c.risk_b) AS median_risk_b
    FROM compare_audits(audit_a, audit_b) c, unnest(map_entries(c.attributes)) AS u(e)
    WHERE c.change NOT IN ('only in A', 'only in B')
    GROUP BY ALL ORDER BY attribute, "group";
CREATE OR REPLACE VIEW model_audit_record_risk AS
    SELECT t.audit_id, t.target_name, t.dataset, s.record_idx, r.patient_key, r.split, s.member, s.risk,
           s.lira_offline, s.rmia_offline, s.score, s.n_out, r.source_file, r.source_row
    FROM model_audit_record_stats s JOIN model_audits t USING (audit_id)
    JOIN records r ON r.dataset_version = t.dataset_version AND r.record_idx = s.record_idx;
CREATE OR REPLACE VIEW model_audit_patient_risk AS
    SELECT t.audit_id, t.target_name, t.dataset, s.* EXCLUDE (audit_id)
    FROM model_audit_patient_stats s JOIN model_audits t USING (audit_id);
CREATE OR REPLACE VIEW model_audit_summary AS
    SELECT t.audit_id, t.target_name, t.dataset, t.target_kind, t.target_digest, t.pool_key, t.n_references,
           t.variance, t.finished_at, r.attack, r.level, r.auc, r.n_members, r.n_non_members,
           r.tpr_at_fpr[0.001] AS tpr_at_1e3, r.tpr_at_fpr[0.01] AS tpr_at_1e2,
           CAST(t.headline->>'n_member_patients_at_risk' AS BIGINT) AS n_member_patients_at_risk,
           CAST(t.headline->>'expected_by_chance' AS DOUBLE) AS expected_by_chance,
           CAST(t.headline->>'n_member_patients_significant' AS BIGINT) AS n_member_patients_significant,
           CAST(t.headline->>'sanity_non_members' AS DOUBLE) AS sanity_non_members
    FROM model_audits t JOIN model_audit_attack_results r USING (audit_id) WHERE t.finished_at IS NOT NULL;
"""

# Deprecated: the model audit's tables and views were named `target_*` before `target` came to mean only the
# pool's held-out target models. These views keep queries written against the old names working for one
# release; they go in the release after (README, "SQL views").
DEPRECATED_VIEWS: dict[str, str] = {
    "target_audits": "model_audits",
    "target_record_stats": "model_audit_record_stats",
    "target_patient_stats": "model_audit_patient_stats",
    "target_attack_results": "model_audit_attack_results",
    "target_record_risk": "model_audit_record_risk",
    "target_patient_risk": "model_audit_patient_risk",
    "target_audit_summary": "model_audit_summary",
}
COMPAT_VIEWS = "".join(f"CREATE OR REPLACE VIEW {old} AS SELECT * FROM {new};\n" for old, new in DEPRECATED_VIEWS.items())

SCORE_COLUMNS = ("score", "prob")


_BATCH_ROWS = 1_000_000


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def json_dumps(value: Any) -> str:
    """JSON for DuckDB JSON columns: NaN / inf become null (they are not JSON), numpy scalars plain."""
    return json.dumps(_finite_or_none(value), allow_nan=False, default=str)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class PoolRecord:
    pool_key: str
    dataset: str
    dataset_version: str
    architecture: str
    arch_params: dict[str, Any]
    recipe: dict[str, Any]
    mask_seed: int
    eval_views: int
    n_targets: int
    score_transform: str
    code_version: str
    n_patients: int
    recipe_preset: str | None = None  # the --recipe preset the settings came from (not part of the key)


class AuditStore:
    """DuckDB file at ``path``. Open read-only for queries; the flow holds the only writer."""

    def __init__(self, path: Path, read_only: bool = False, wait_seconds: float = 6 * 3600):
        self.path = Path(path)
        self.read_only = read_only
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
            except OSError as exc:
                raise MedauditError(f"{self.path.parent}: cannot create the results folder ({exc.strerror})") from exc
        elif not self.path.exists():
            raise MedauditError(f"{self.path}: no audit database here (run an audit first)")
        else:
            check_private(self.path)
        self.con = self._connect(wait_seconds)
        if not read_only:
            # sealed by default (tasks/storage/sealed.py): the writer tightens the file it owns, whatever the umask
            make_private(self.path)
            make_private(Path(f"{self.path}.wal"))
            self._migrate()
            self.con.execute(SCHEMA)
            self.con.execute(VIEWS)
            self.con.execute(COMPAT_VIEWS)

    def _connect(self, wait_seconds: float) -> duckdb.DuckDBPyConnection:
        """Open the file; while another process holds it (one writer at a time, design D10), wait for it."""
        deadline = time.monotonic() + wait_seconds
        announced = False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                locked = "lock" in str(exc).lower()
                if not locked or time.monotonic() > deadline:
                    what = "another medaudit process still holds it" if locked else str(exc)
                    raise MedauditError(f"{self.path}: cannot open the audit database ({what})") from exc
                if not announced:
                    logging.getLogger("medaudit").warning("%s is in use by another audit; waiting for it to finish", self.path)
                    announced = True
                time.sleep(1.0)

    def _migrate(self) -> None:
        """Bring older database files up to SCHEMA: renamed tables, added columns."""
        for old, new in _RENAMED_TABLES:
            kind = self._scalar("SELECT table_type FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?", [old])
            if kind == "BASE TABLE":
                self.con.execute(f"ALTER TABLE {old} RENAME TO {new}")
        for table, column, sql_type in _ADDED_COLUMNS:
            exists = self._scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?", [table])
            if exists:
                self.con.execute(f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "{column}" {sql_type}')

    def close(self) -> None:
        # Drop the connection, not only close it: a failed flow's traceback keeps this store alive until exit,
        # and a DuckDB connection object alive then makes DuckDB's bindings print a 'nanobind: leaked' report.
        con = self.__dict__.pop("con", None)
        if con is not None:
            con.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scalar(self, sql: str, params: list[Any]) -> Any:
        # fetchall, not fetchone: DuckDB 2 refuses new work while a result is partly fetched.
        rows = self.con.execute(sql, params).fetchall()
        return rows[0][0] if rows else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing. A write the file system refuses (full disk, I/O error), at an insert or at the
        COMMIT, is a MedauditError naming the file and the OS error; nothing of the transaction is stored."""
        self.con.execute("BEGIN TRANSACTION")
        committing = False
        try:
            yield self.con
            committing = True
            self.con.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT may have rolled back already
                self.con.execute("ROLLBACK")
            if isinstance(exc, duckdb.IOException | duckdb.FatalException) or (committing and isinstance(exc, duckdb.TransactionException)):
                raise MedauditError(f"{self.path}: cannot write the audit database ({exc}); nothing of this change was stored") from exc
            raise

    # ---- datasets
    def register_snapshot(self, snapshot: Any) -> None:
        """Load a snapshot's records, attributes, quarantine and repairs once per version; when the
        version is known but its ledgers changed (same accepted data), replace the ledgers."""
        if self._scalar("SELECT count(*) FROM datasets WHERE version = ?", [snapshot.version]):
            self._refresh_ledgers(snapshot)
            return
        from tasks.ingest.snapshot import label_columns

        rec = snapshot.records
        labels = rec[label_columns(snapshot.task)].to_numpy(dtype=np.float64)
        records = pa.table(
            {
                "dataset_version": pa.array([snapshot.version] * len(rec)),
                "record_idx": pa.array(rec["record_idx"].to_numpy()),
                "patient_key": pa.array(rec["patient_key"].to_numpy()),
                "split": pa.array(rec["split"].to_numpy()),
                "labels": pa.FixedSizeListArray.from_arrays(pa.array(labels.ravel()), labels.shape[1]).cast(pa.list_(pa.float64())),
                "source_file": pa.array(rec["source_file"].astype(str).to_numpy()),
                "source_row": pa.array(rec["source_row"].to_numpy(dtype=np.int64)),
            }
        )
        attrs = rec.melt(id_vars=["record_idx"], value_vars=list(snapshot.attributes), var_name="attribute", value_name="value")
        attrs.insert(0, "dataset_version", snapshot.version)
        manifest = json.loads((snapshot.path / "manifest.json").read_text())
        with self.transaction() as con:
            con.register("_records", records)
            con.execute("INSERT INTO records SELECT * FROM _records")
            con.register("_attrs", attrs)
            con.execute("INSERT INTO record_attributes SELECT dataset_version, record_idx, attribute, value FROM _attrs")
            self._insert_ledgers(con, snapshot)
            con.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    snapshot.dataset,
                    snapshot.version,
                    str(snapshot.path),
                    snapshot.n_raw,
                    snapshot.n_accepted,
                    snapshot.n_quarantined,
                    manifest["n_patients"],
                    json.dumps(manifest),
                    _now(),
                ],
            )
            for name in ("_records", "_attrs"):
                con.unregister(name)

    @staticmethod
    def _insert_ledgers(con: Any, snapshot: Any) -> None:
        quarantine = snapshot.quarantine()
        quarantine.insert(0, "dataset_version", snapshot.version)
        repairs = snapshot.repairs()
        repairs.insert(0, "dataset_version", snapshot.version)
        con.register("_quarantine", quarantine)
        con.execute('INSERT INTO quarantine SELECT dataset_version, source_file, source_row, stage, "column", reason FROM _quarantine')
        con.register("_repairs", repairs)
        con.execute(
            'INSERT INTO repairs SELECT dataset_version, source_file, source_row, "column", rule, original, repaired, reason FROM _repairs'
        )
        con.unregister("_quarantine")
        con.unregister("_repairs")

    def _refresh_ledgers(self, snapshot: Any) -> None:
        manifest = json.loads((snapshot.path / "manifest.json").read_text())
        stored = self.con.execute("SELECT manifest FROM datasets WHERE version = ?", [snapshot.version]).fetchone()[0]
        stored = json.loads(stored) if isinstance(stored, str) else stored
        keys = ("quarantine_digest", "repairs_digest", "n_raw", "n_quarantined")
        if all(stored.get(k) == manifest.get(k) for k in keys):
            return
        with self.transaction() as con:
            con.execute("DELETE FROM quarantine WHERE dataset_version = ?", [snapshot.version])
            con.execute("DELETE FROM repairs WHERE dataset_version = ?", [snapshot.version])
            self._insert_ledgers(con, snapshot)
            con.execute(
                "UPDATE datasets SET n_raw = ?, n_quarantined = ?, manifest = ? WHERE version = ?",
                [snapshot.n_raw, snapshot.n_quarantined, json.dumps(manifest), snapshot.version],
            )

    # ---- pools and masks
    def ensure_pool(self, pool: PoolRecord, patient_order: list[str]) -> None:
        if self._scalar("SELECT count(*) FROM pools WHERE pool_key = ?", [pool.pool_key]):
            stored = [
                r[0]
                for r in self.con.execute(
                    "SELECT patient_key FROM pool_patients WHERE pool_key = ? ORDER BY patient_pos", [pool.pool_key]
                ).fetchall()
            ]
            if stored != patient_order:
                raise MedauditError(f"pool {pool.pool_key}: stored patient order differs from the snapshot's (corrupt database?)")
            return
        order = pd.DataFrame({"pool_key": pool.pool_key, "patient_pos": np.arange(len(patient_order)), "patient_key": patient_order})
        with self.transaction() as con:
            con.execute(
                "INSERT INTO pools (pool_key, dataset, dataset_version, architecture, arch_params, recipe, mask_seed, eval_views, "
                "n_targets, score_transform, code_version, n_patients, created_at, recipe_preset) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    pool.pool_key,
                    pool.dataset,
                    pool.dataset_version,
                    pool.architecture,
                    json.dumps(pool.arch_params),
                    json.dumps(pool.recipe),
                    pool.mask_seed,
                    pool.eval_views,
                    pool.n_targets,
                    pool.score_transform,
                    pool.code_version,
                    pool.n_patients,
                    _now(),
                    pool.recipe_preset,
                ],
            )
            con.register("_order", order)
            con.execute("INSERT INTO pool_patients SELECT pool_key, patient_pos, patient_key FROM _order")
            con.unregister("_order")

    def store_masks(self, pool_key: str, masks: np.ndarray) -> None:
        """Store the (M, P) patient masks of models not yet stored (pools only ever grow)."""
        have = self._scalar("SELECT coalesce(max(model_idx) + 1, 0) FROM masks WHERE pool_key = ?", [pool_key])
        if have >= len(masks):
            stored = self.load_masks(pool_key, len(masks))
            if not np.array_equal(stored, masks):
                raise MedauditError(f"pool {pool_key}: stored masks differ from the recomputed ones")
            return
        new = masks[have:]
        m_idx, p_idx = np.meshgrid(np.arange(have, len(masks)), np.arange(masks.shape[1]), indexing="ij")
        table = pa.table(
            {
                "pool_key": pa.array([pool_key] * new.size),
                "model_idx": m_idx.ravel().astype(np.int32),
                "patient_pos": p_idx.ravel().astype(np.int64),
                "is_in": new.ravel(),
            }
        )
        with self.transaction() as con:
            con.register("_masks", table)
            con.execute("INSERT INTO masks SELECT * FROM _masks")
            con.unregister("_masks")

    def load_masks(self, pool_key: str, n_models: int) -> np.ndarray:
        """(n_models, n_patients) bool; read in record batches, so memory is the mask plus one batch."""
        n_pat = self._scalar("SELECT n_patients FROM pools WHERE pool_key = ?", [pool_key])
        out = np.zeros((n_models, n_pat), dtype=bool)
        reader = self.con.sql(
            "SELECT model_idx, patient_pos FROM masks WHERE pool_key = ? AND model_idx < ? AND is_in", params=[pool_key, n_models]
        ).fetch_arrow_reader(_BATCH_ROWS)
        for batch in reader:
            out[batch.column(0).to_numpy(), batch.column(1).to_numpy()] = True
        return out

    # ---- models
    def completed_models(self, pool_key: str) -> set[int]:
        rows = self.con.execute("SELECT model_idx FROM pool_models WHERE pool_key = ? AND status = 'complete'", [pool_key]).fetchall()
        return {r[0] for r in rows}

    def load_model_shard(
        self, pool_key: str, model_idx: int, shard: Path, meta: dict[str, Any], scores: np.ndarray, probs: np.ndarray, flags: np.ndarray
    ) -> bool:
        """Store one trained model (logits from ``shard``, its scores and metadata) atomically.

        scores/probs: (N, V) float64 for all records in record_idx order; flags (N,) str.
        Returns False (and stores nothing) if the model is already stored.
        """
        if model_idx in self.completed_models(pool_key):
            return False
        logits = pq.read_table(shard)
        n, v = scores.shape
        rec = np.repeat(np.arange(n, dtype=np.int64), v)
        view = np.tile(np.arange(v, dtype=np.int8), n)
        score_tab = pa.table(
            {
                "pool_key": pa.array([pool_key] * (n * v)),
                "model_idx": pa.array(np.full(n * v, model_idx, np.int32)),
                "record_idx": rec,
                "view": view,
                # NaN (unusable score) is stored as NULL so no NaN reaches a table.
                "score": pa.array(scores.ravel(), mask=~np.isfinite(scores.ravel())),
                "prob": pa.array(probs.ravel(), mask=~np.isfinite(probs.ravel())),
            }
        )
        bad = np.flatnonzero(flags != "")
        flag_tab = pa.table(
            {
                "pool_key": pa.array([pool_key] * len(bad)),
                "model_idx": pa.array(np.full(len(bad), model_idx, np.int32)),
                "record_idx": pa.array(bad.astype(np.int64)),
                "flag": pa.array(flags[bad].astype(str)),
            }
        )
        with self.transaction() as con:
            con.register("_logits", logits)
            con.execute("INSERT INTO logits SELECT ?, ?, record_idx, logits FROM _logits", [pool_key, model_idx])
            con.register("_scores", score_tab)
            con.execute("INSERT INTO scores SELECT * FROM _scores")
            con.register("_flags", flag_tab)
            con.execute("INSERT INTO score_flags SELECT * FROM _flags")
            con.execute(
                "INSERT INTO pool_models VALUES (?, ?, ?, 'complete', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    pool_key,
                    model_idx,
                    meta["seed"],
                    meta["n_train_records"],
                    meta["train_seconds"],
                    meta.get("train_loss"),
                    meta.get("test_auroc"),
                    meta["epochs"],
                    meta["checkpoint"],
                    meta["device"],
                    meta["worker"],
                    meta["code_version"],
                    meta.get("git_commit"),
                    _now(),
                    json.dumps(meta.get("train_info") or {}),
                ],
            )
            for name in ("_logits", "_scores", "_flags"):
                con.unregister(name)
        return True

    def score_blocks(
        self, pool_key: str, model_idx: list[int], record_idx: np.ndarray, n_views: int, block_size: int = 100_000, column: str = "score"
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (records (B,), values (M, B, V) float64 with NaN for missing) over ``record_idx`` blocks.

        Streams: memory is one block of M x B x V values plus one fetched batch of rows, never the
        whole pool (design D11). DuckDB prunes row groups by record_idx, so a block reads only its rows.
        """
        if column not in SCORE_COLUMNS:
            raise ValueError(f"column must be one of {SCORE_COLUMNS}, got {column!r}")
        model_map = np.full(max(model_idx) + 1, -1, dtype=np.int64)
        model_map[np.asarray(model_idx, dtype=np.int64)] = np.arange(len(model_idx))
        record_idx = np.asarray(record_idx, dtype=np.int64)
        for start in range(0, len(record_idx), block_size):
            recs = record_idx[start : start + block_size]
            lo, hi = int(recs.min()), int(recs.max())
            out = np.full((len(model_idx), len(recs), n_views), np.nan)
            local = np.full(hi - lo + 1, -1, dtype=np.int64)
            local[recs - lo] = np.arange(len(recs))
            reader = self.con.sql(
                f"SELECT model_idx, record_idx, view, {column} FROM scores WHERE pool_key = ? "
                "AND record_idx BETWEEN ? AND ? AND model_idx IN (SELECT unnest(?))",
                params=[pool_key, lo, hi, list(model_idx)],
            ).fetch_arrow_reader(_BATCH_ROWS)
            for batch in reader:
                r = local[batch.column(1).to_numpy() - lo]
                ok = r >= 0
                vals = batch.column(3).to_numpy(zero_copy_only=False)  # NULL -> NaN
                out[model_map[batch.column(0).to_numpy()[ok]], r[ok], batch.column(2).to_numpy()[ok]] = vals[ok]
            yield recs, out

    # ---- results
    def insert_frame(self, table: str, frame: pd.DataFrame) -> None:
        """Append ``frame`` to ``table`` by column name; NaN becomes NULL (no NaN in result tables)."""
        maps = {c: frame[c] for c in frame.columns if frame[c].dtype == object and len(frame) and isinstance(frame[c].iloc[0], dict)}
        arrow = pa.Table.from_pandas(frame.drop(columns=list(maps)), preserve_index=False)
        for col, values in maps.items():  # dict cells -> DuckDB MAP (pyarrow would infer a struct)
            first = next(iter(values.iloc[0]), "")
            key_type = pa.float64() if isinstance(first, float) else pa.string()
            value_type = pa.float64() if key_type == pa.float64() else pa.string()
            items = [list(d.items()) for d in values]  # from_pandas: NaN map values become NULL too
            arrow = arrow.append_column(col, pa.array(items, type=pa.map_(key_type, value_type), from_pandas=True))
        with self.transaction() as con:
            con.register("_frame", arrow)
            cols = ", ".join(f'"{c}"' for c in frame.columns)
            con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _frame")
            con.unregister("_frame")

    def start_audit(
        self,
        audit_id: str,
        pool_key: str,
        dataset: str,
        version: str,
        n_models: int,
        n_targets: int,
        config: dict[str, Any],
        flow_run_id: str | None,
    ) -> None:
        self.con.execute(
            "INSERT INTO audits VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, ?)",
            [audit_id, pool_key, dataset, version, n_models, n_targets, json.dumps(config, default=str), _now(), flow_run_id],
        )

    def finish_audit(self, audit_id: str, headline: dict[str, Any]) -> None:
        self.con.execute("UPDATE audits SET headline = ?, finished_at = ? WHERE audit_id = ?", [json_dumps(headline), _now(), audit_id])

    def start_model_audit(self, audit_id: str, row: dict[str, Any]) -> None:
        """Register an audit of an existing model (``row``: the model_audits columns but the times)."""
        cols = ["pool_key", "dataset", "dataset_version", "target_name", "target_kind", "target_digest", "members_digest"]
        cols += ["n_references", "variance", "config", "flow_run_id"]
        self.con.execute(
            f"INSERT INTO model_audits (audit_id, {', '.join(cols)}, started_at) VALUES (?, {', '.join('?' * len(cols))}, ?)",
            [audit_id, *(json_dumps(row[c]) if c == "config" else row[c] for c in cols), _now()],
        )

    def finish_model_audit(self, audit_id: str, headline: dict[str, Any]) -> None:
        self.con.execute(
            "UPDATE model_audits SET headline = ?, finished_at = ? WHERE audit_id = ?", [json_dumps(headline), _now(), audit_id]
        )

    # ---- audits over time
    def record_reaudit(self, run: dict[str, Any]) -> None:
        """One re-audit run, audited or skipped (``run``: the reaudit_runs columns but run_at; alerts a list)."""
        cols = ["dataset", "decision", "reason", "dataset_version", "pool_key", "audit_key", "previous_audit_id", "audit_id"]
        cols += ["trained", "alerts", "flow_run_id"]
        self.con.execute(
            f"INSERT INTO reaudit_runs (run_at, {', '.join(cols)}) VALUES (?, {', '.join('?' * len(cols))})",
            [_now(), *(json_dumps(run[c]) if c == "alerts" else run.get(c) for c in cols)],
        )

    def audit_row(self, audit_id: str) -> dict[str, Any]:
        """One finished audit (dataset, pool, models, finished_at; headline and config as dicts); MedauditError if unknown."""
        rows = self.query(
            "SELECT audit_id, dataset, dataset_version, pool_key, n_models, finished_at, headline, config FROM audits "
            "WHERE audit_id = ? AND finished_at IS NOT NULL",
            [audit_id],
        )
        if rows.empty:
            raise MedauditError(f"{self.path}: no finished audit {audit_id!r} (see `medaudit history`)")
        row = rows.iloc[0].to_dict()
        for key in ("headline", "config"):
            row[key] = json.loads(row[key]) if isinstance(row[key], str) else dict(row[key] or {})
        return row

    def risk_history(self, dataset: str) -> pd.DataFrame:
        """Finished audits of ``dataset`` in time order: audit_id, pool_key, n_models, finished_at and headline risk numbers."""
        return self.query(
            "SELECT audit_id, pool_key, n_models, finished_at, "
            "CAST(headline->>'share_patients_above_threshold' AS DOUBLE) AS share_patients_above_threshold, "
            "CAST(headline->>'n_patients_above_threshold' AS BIGINT) AS n_patients_above_threshold, "
            "CAST(headline->>'n_patients_at_risk' AS BIGINT) AS n_patients_at_risk "
            "FROM audits WHERE dataset = ? AND finished_at IS NOT NULL AND headline IS NOT NULL ORDER BY finished_at",
            [dataset],
        )

    def compare_patients(self, audit_a: str, audit_b: str) -> pd.DataFrame:
        """The ``compare_audits`` table: one row per patient key with its change between the two audits."""
        return self.query("SELECT * EXCLUDE (attributes) FROM compare_audits(?, ?) ORDER BY change, risk_change DESC", [audit_a, audit_b])

    def compare_subgroups(self, audit_a: str, audit_b: str) -> pd.DataFrame:
        """The ``compare_subgroups`` table: per (attribute, group) counts at risk in A and B, newly / no longer."""
        return self.query("SELECT * FROM compare_subgroups(?, ?)", [audit_a, audit_b])

    def patient_explanation(self, patient_key: str, audit_id: str | None = None) -> dict[str, Any]:
        """What `medaudit explain` shows for one patient of a pool audit (the latest one holding the patient,
        or ``audit_id``): ``audit`` (dict), ``patient`` (dict: the patient_stats row, ``rank`` among the
        audit's patients by risk, ``n_patients``), ``records`` (frame: record stats with rarity, atypicality
        and its percentile among the audit's records, split, source_file + source_row), ``attributes`` (frame:
        record_idx, attribute, value) and ``scores`` (frame: model_idx, record_idx, is_in, score = view mean,
        over the audit's models). Raises MedauditError when the patient is not in the audit."""
        audit = self.query(
            "SELECT a.audit_id, a.pool_key, a.dataset, a.dataset_version, a.n_models, a.n_targets, a.finished_at, a.headline "
            "FROM audits a JOIN patient_stats s USING (audit_id) WHERE s.patient_key = ? AND a.finished_at IS NOT NULL "
            "AND (CAST(? AS VARCHAR) IS NULL OR a.audit_id = ?) ORDER BY a.finished_at DESC LIMIT 1",
            [patient_key, audit_id, audit_id],
        )
        if audit.empty:
            where = f"audit {audit_id}" if audit_id else "any finished pool audit"
            raise MedauditError(f"patient key {patient_key!r} is not in {where} of {self.path}")
        a = audit.iloc[0].to_dict()
        aid, pool_key = a["audit_id"], a["pool_key"]
        patient = (
            self.query(
                "SELECT s.*, (SELECT count(*) FROM patient_stats o WHERE o.audit_id = s.audit_id AND o.risk_max > s.risk_max) + 1 AS rank, "
                "(SELECT count(*) FROM patient_stats o WHERE o.audit_id = s.audit_id) AS n_patients "
                "FROM patient_stats s WHERE s.audit_id = ? AND s.patient_key = ?",
                [aid, patient_key],
            )
            .iloc[0]
            .to_dict()
        )
        cols = set(self.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'record_stats'")["column_name"])
        if "auc_crossfit" not in cols:
            raise MedauditError(f"{self.path}: written before rarity and atypicality were stored; rerun the audit (no model is retrained)")
        records = self.query(
            "SELECT s.record_idx, r.split, r.source_file, r.source_row, s.label_set, s.auc AS risk, s.auc_se, s.auc_empirical, "
            "s.n_in, s.n_out, s.mu_in, s.mu_out, s.sd_in, s.sd_out, s.flag, s.label_prevalence, s.atypicality, s.auc_crossfit, "
            "(SELECT count(*) FROM record_stats o WHERE o.audit_id = s.audit_id AND o.atypicality < s.atypicality)::DOUBLE "
            "/ nullif((SELECT count(atypicality) FROM record_stats o WHERE o.audit_id = s.audit_id), 0) AS atypicality_percentile "
            "FROM record_stats s JOIN records r ON r.dataset_version = ? AND r.record_idx = s.record_idx "
            "WHERE s.audit_id = ? AND r.patient_key = ? ORDER BY s.auc DESC NULLS LAST, s.record_idx",
            [a["dataset_version"], aid, patient_key],
        )
        idx = [int(i) for i in records["record_idx"]]
        attributes = self.query(
            "SELECT record_idx, attribute, value FROM record_attributes WHERE dataset_version = ? AND record_idx IN (SELECT unnest(?)) "
            "ORDER BY record_idx, attribute",
            [a["dataset_version"], idx],
        )
        scores = self.query(
            "SELECT sc.model_idx, sc.record_idx, m.is_in, avg(sc.score) AS score FROM scores sc "
            "JOIN pool_patients pp ON pp.pool_key = sc.pool_key AND pp.patient_key = ? "
            "JOIN masks m ON m.pool_key = sc.pool_key AND m.model_idx = sc.model_idx AND m.patient_pos = pp.patient_pos "
            "WHERE sc.pool_key = ? AND sc.model_idx < ? AND sc.record_idx IN (SELECT unnest(?)) GROUP BY ALL ORDER BY ALL",
            [patient_key, pool_key, int(a["n_models"]), idx],
        )
        return {"audit": a, "patient": patient, "records": records, "attributes": attributes, "scores": scores}

    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        return self.con.execute(sql, params or []).df()


def read_only_query(db_path: Path, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    """Run ``sql`` (with ``params`` bound to its ``?``) on a read-only connection: any write is refused by DuckDB itself."""
    store = AuditStore(db_path, read_only=True)
    try:
        return store.con.execute(sql, params or []).df()
    except duckdb.Error as exc:
        raise MedauditError(f"query failed: {exc}") from exc
    finally:
        store.close()

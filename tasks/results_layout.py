"""Where everything lives under a results folder: the one place that spells out results paths.

    <results>/medaudit.duckdb                              the results database
    <results>/snapshots/<dataset>/                         versioned Parquet snapshots (and the ingest cache index)
    <results>/shards/<pool_key>/                           shadow models' logits between a worker and the store
    <results>/reports/<dataset>/<audit_id>/                a pool audit's report, plots and exports
    <results>/reports/<dataset>/model-<audit_id>/          an audit-model report
    <results>/reports/<study>/<dataset>/                   a study over several pools (dp_sweep, scaling)
    <results>/demo_data/<dataset>/n<patients>_seed<seed>/  a synthetic cohort written for a demo or study

A leaf module (pathlib only) so that config, ingest, storage and the flows can all use it.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_RESULTS_DIR = Path("results")
DB_FILE = "medaudit.duckdb"


def db_path(results_dir: Path) -> Path:
    return Path(results_dir) / DB_FILE


def snapshots_dir(results_dir: Path, dataset: str) -> Path:
    return Path(results_dir) / "snapshots" / dataset


def shards_dir(results_dir: Path, pool_key: str) -> Path:
    return Path(results_dir) / "shards" / pool_key


def audit_report_dir(results_dir: Path, dataset: str, audit_id: str) -> Path:
    return Path(results_dir) / "reports" / dataset / audit_id


def model_audit_report_dir(results_dir: Path, dataset: str, audit_id: str) -> Path:
    return Path(results_dir) / "reports" / dataset / f"model-{audit_id}"


def study_report_dir(results_dir: Path, study: str, dataset: str) -> Path:
    return Path(results_dir) / "reports" / study / dataset


def demo_data_dir(results_dir: Path, dataset: str, n_patients: int, seed: int = 0) -> Path:
    return Path(results_dir) / "demo_data" / dataset / f"n{n_patients}_seed{seed}"

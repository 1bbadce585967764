"""`medaudit demo --dataset D` runs the whole audit on a synthetic cohort of each clinical layout.

Tiny cohorts and two epochs: this checks that every adapter goes through the real pipeline (Prefect
flow, decoding on the Dask workers, training, attacks, DuckDB views), not the demo's numbers; those are
in docs/DATASETS.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from flows.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

# Smallest cohorts the writers accept with every awkward case planted (FairVision needs 30).
PATIENTS = {"ptb-xl": 20, "chexpert": 20, "mimic-cxr": 20, "fitzpatrick": 24, "fairvision": 30, "embed": 20}


@pytest.mark.parametrize("dataset", sorted(PATIENTS))
def test_demo_runs_the_whole_audit(dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    argv = ["demo", "--dataset", dataset, "--patients", str(PATIENTS[dataset]), "--models", "8", "--targets", "2"]
    assert main([*argv, "--epochs", "2", "--results", str(results), "--no-progress"]) == 0
    out = capsys.readouterr().out

    counts = re.search(r"(\d+) raw rows: (\d+) accepted, (\d+) quarantined", out)
    assert counts, out
    n_raw, n_accepted, n_quarantined = map(int, counts.groups())
    assert n_raw == n_accepted + n_quarantined and n_quarantined > 0  # the writers plant awkward rows
    assert re.search(r"aggregate LiRA AUC\s+\d\.\d{3}", out) and "trained now: 8" in out

    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        for view in ("record_risk", "patient_risk", "subgroup_risk"):
            assert con.execute(f"SELECT count(*) FROM {view}").fetchone()[0] > 0, view
        assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == n_quarantined
        assert con.execute("SELECT DISTINCT dataset FROM audits").fetchall() == [(dataset,)]

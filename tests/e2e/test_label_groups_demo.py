"""`medaudit demo --dataset chexpert|ptb-xl` (real training): the overlapping label groups reach
subgroup_risk, the Prefect subgroup artifact and the report; rarity and atypicality rows too.

Small cohorts and pools, few epochs (as in test_demo_datasets.py): this checks the wiring, not the numbers.
Heavy: two real demos with Prefect and Dask.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import duckdb
import pytest

from flows.cli import main
from tasks.datasets import get_dataset

pytestmark = pytest.mark.slow


@pytest.mark.heavy
@pytest.mark.parametrize("dataset", ["chexpert", "ptb-xl"])
def test_label_groups_reach_the_tables_the_artifact_and_the_report(dataset: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    with redirect_stdout(io.StringIO()):
        argv = ["demo", "--dataset", dataset, "--patients", "40", "--models", "8", "--targets", "2", "--epochs", "2"]
        assert main([*argv, "--results", str(results), "--no-progress"]) == 0
    labels = set(get_dataset(dataset).task.label_names)
    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        rows = con.execute('SELECT level, attribute, "group", kind, units, p_holm, chi2_p FROM subgroup_risk').df()
        exposure = con.execute("SELECT * FROM exposure_risk").df()
    label_rows = rows[rows["kind"] == "label"]
    for level in ("patient", "record"):
        groups = set(label_rows.loc[label_rows["level"] == level, "group"])
        assert groups and groups <= labels and len(groups) >= len(labels) - 2, (level, groups)  # the rarest may be absent
    assert label_rows["chi2_p"].isna().all() and label_rows["p_holm"].notna().any()
    assert {"rarity", "atypicality", "demographic"} <= set(rows["kind"])
    assert len(exposure) == 4

    report = next((results / "reports" / dataset).glob("*/report.html")).read_text()
    assert "Who is exposed and why" in report
    assert sum(label in report for label in labels) >= len(labels) - 2

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = [a for a in client.read_artifacts() if a.key == "subgroup-risk"]
    data = [json.loads(a.data) if isinstance(a.data, str) else a.data for a in artifacts]
    assert any({r.get("kind") for r in d} >= {"label"} and {r.get("group") for r in d} & labels for d in data)

"""A user's first audit of a dataset as downloaded: `medaudit audit D DIR --models 8 --recipe quick`,
with no --arch, trains the dataset's own architecture (not an MLP on images or ECGs), records the
preset in the pool row, and nothing it prints, stores, reports or publishes as a Prefect artifact
quotes a raw identifier.

Heavy: two full audits (Prefect flow, Dask workers, 8 conv nets each) take minutes on 2 cores.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from flows.cli import main
from tasks.synthetic import get_synthetic_writer

pytestmark = [pytest.mark.heavy, pytest.mark.slow]

# (patients, the quick preset's architecture)
CASES = {"ptb-xl": (20, "resnet1d"), "fitzpatrick": (24, "small_cnn")}


@pytest.mark.parametrize("dataset", sorted(CASES))
def test_first_audit_uses_the_datasets_architecture_and_leaks_nothing(
    dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], leak_scan: SimpleNamespace
) -> None:
    patients, arch = CASES[dataset]
    raw = tmp_path / "raw"
    get_synthetic_writer(dataset)(raw, patients, 0)
    results = tmp_path / "results"
    started = datetime.now(UTC)
    rc = main(["audit", dataset, str(raw), "--models", "8", "--recipe", "quick", "--results", str(results), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "trained now: 8" in out.out

    with duckdb.connect(str(results / "medaudit.duckdb"), read_only=True) as con:
        pools = con.execute("SELECT architecture, recipe_preset FROM pools").fetchall()
        failed = con.execute("SELECT count(*) FROM pool_models WHERE status <> 'complete'").fetchone()[0]
    assert pools == [(arch, "quick")] and failed == 0

    identifiers = leak_scan.raw_identifiers(dataset, raw)
    texts = {"stdout": out.out, "stderr": out.err, **leak_scan.results_texts(results), **leak_scan.artifact_texts(started)}
    assert any(k.endswith("report.html") for k in texts) and any(k.startswith("artifact:") for k in texts)
    assert not leak_scan.find(texts, identifiers)

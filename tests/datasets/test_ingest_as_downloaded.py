"""Every dataset as downloaded, through `medaudit ingest D DIR` with no option: each published layout
variant ingests to the same snapshot, a folder holding none names every file looked for and the option
to set, and no raw identifier appears in anything written or printed (the scan of tests/datasets/conftest.py,
shown to fail when a reason quotes one).

Awkward miniature cohorts: the synthetic writers plant contract failures, duplicates, cohort exclusions
and unreadable inputs; the MIMIC-IV-ED table gets out-of-range vitals, a duplicate stay and a
non-numeric cell here.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from flows.cli import main
from tasks.datasets import list_datasets
from tasks.datasets.quarantine import Quarantine
from tasks.ingest.snapshot import Snapshot
from tasks.synthetic import get_synthetic_writer, synthetic_datasets

# Smallest cohorts the writers accept with every awkward case planted.
PATIENTS = {"mimic-iv-ed": 50, "ptb-xl": 20, "chexpert": 20, "mimic-cxr": 20, "fitzpatrick": 24, "fairvision": 30, "embed": 20}
# The non-default published layouts of each writer (the default is in tests/datasets/test_<dataset>.py).
VARIANTS = [("chexpert", "small"), ("embed", "released"), ("fitzpatrick", "images"), ("fairvision", "flat")]


def _awkward_ed_table(raw: Path) -> None:
    """Add to the ED writer's table: the four kinds of bad vitals, a duplicate stay, a non-numeric cell."""
    path = raw / "master_dataset.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    adults = df.index[(df["age"].astype(float) >= 18) & (df["triage_acuity"] != "")]
    a, b, c, d, e, f = adults[:6]
    df.loc[a, "triage_temperature"] = "37.2"  # typed in °C into the °F column
    df.loc[b, "triage_heartrate"] = "400"
    df.loc[c, "triage_o2sat"] = "120"
    df.loc[d, "triage_pain"] = "13"
    df.loc[e, "stay_id"] = df.loc[f, "stay_id"]
    df.loc[f, "triage_sbp"] = "n/a"
    df.to_csv(path, index=False)


def _write(dataset: str, raw: Path, variant: str | None = None) -> Path:
    kwargs = {"variant": variant} if variant else {}
    get_synthetic_writer(dataset)(raw, PATIENTS[dataset], 0, **kwargs)
    if dataset == "mimic-iv-ed":
        _awkward_ed_table(raw)
    return raw


def _ingest(dataset: str, raw: Path, results: Path, capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str, str]:
    rc = main(["ingest", dataset, str(raw), "--results", str(results), *options])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _snapshot(out: str) -> Snapshot:
    path = next(line.split(" at ", 1)[1] for line in out.splitlines() if line.startswith("snapshot version"))
    return Snapshot.open(Path(path))


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("raw")
    return {d: _write(d, root / d) for d in PATIENTS}


@pytest.fixture(scope="module")
def ingested(cohorts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimpleNamespace]:
    """`medaudit ingest D DIR` of each default-layout cohort, once: rc, stdout, stderr, results folder."""
    done = {}
    for dataset, raw in cohorts.items():
        results = tmp_path_factory.mktemp(f"results-{dataset}")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["ingest", dataset, str(raw), "--results", str(results)])
        done[dataset] = SimpleNamespace(rc=rc, out=out.getvalue(), err=err.getvalue(), results=results)
    return done


def test_every_registered_adapter_with_a_layout_writer_is_scanned() -> None:
    covered = {cls.name for cls in list_datasets()} & set(synthetic_datasets())
    assert set(PATIENTS) == covered and len(PATIENTS) == 7


@pytest.mark.parametrize("dataset", sorted(PATIENTS))
def test_ingest_as_downloaded_leaks_no_identifier(
    dataset: str, cohorts: dict[str, Path], ingested: dict[str, SimpleNamespace], leak_scan: SimpleNamespace
) -> None:
    raw, run = cohorts[dataset], ingested[dataset]
    rc, out, err, results = run.rc, run.out, run.err, run.results
    assert rc == 0, err
    snap = _snapshot(out)
    assert snap.n_quarantined > 0 and snap.n_raw == snap.n_accepted + snap.n_quarantined

    identifiers = leak_scan.raw_identifiers(dataset, raw)
    assert len(identifiers) >= snap.n_accepted // 2  # the scan has something to look for
    texts = {"stdout": out, "stderr": err, **leak_scan.results_texts(results)}
    assert {"duckdb:quarantine", "duckdb:repairs", "duckdb:records"} <= set(texts)
    assert not leak_scan.find(texts, identifiers)

    manifest = json.loads((snap.path / "manifest.json").read_text())
    assert len(manifest["quarantine_digest"]) == 16 and len(manifest["repairs_digest"]) == 16


def test_the_scan_fails_when_a_reason_quotes_an_identifier(
    cohorts: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    leak_scan: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plant: an adapter whose cohort reason quotes the raw patient id (Fitzpatrick17k's md5hash, as
    before this was fixed). The same scan as above must find it in stdout, the quarantine file and table."""
    from tasks.datasets.fitzpatrick import Fitzpatrick17k

    original = Fitzpatrick17k.read_records

    def leaky(self: Fitzpatrick17k, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        records = original(self, raw_dir, quarantine)
        planted = records.iloc[[0]]
        quarantine.add_rows(planted, "cohort", "md5hash", "md5hash: " + planted["raw_patient_id"] + " planted")
        return records.iloc[1:].reset_index(drop=True)

    monkeypatch.setattr(Fitzpatrick17k, "read_records", leaky)
    raw, results = cohorts["fitzpatrick"], tmp_path / "results"
    rc, out, err = _ingest("fitzpatrick", raw, results, capsys)
    assert rc == 0, err
    hits = leak_scan.find({"stdout": out, **leak_scan.results_texts(results)}, leak_scan.raw_identifiers("fitzpatrick", raw))
    assert {"stdout", "duckdb:quarantine"} <= set(hits)
    assert any(k.endswith("quarantine.parquet") for k in hits)


@pytest.mark.parametrize(("dataset", "variant"), VARIANTS)
def test_each_published_variant_gives_the_same_snapshot(
    dataset: str,
    variant: str,
    ingested: dict[str, SimpleNamespace],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    leak_scan: SimpleNamespace,
) -> None:
    """The same cohort (writer seed) in another published layout: same records, labels, subgroups,
    split, inputs and quarantine reasons, so the same content-addressed version; no option needed."""
    reference = _snapshot(ingested[dataset].out)
    raw = _write(dataset, tmp_path / f"{dataset}-{variant}", variant)
    rc, out, err = _ingest(dataset, raw, tmp_path / "b", capsys)
    assert rc == 0, err
    snap = _snapshot(out)
    assert snap.version == reference.version
    pd.testing.assert_frame_equal(snap.records, reference.records)
    pd.testing.assert_frame_equal(snap.quarantine(), reference.quarantine())
    assert not leak_scan.find({"stdout": out, "stderr": err}, leak_scan.raw_identifiers(dataset, raw))


@pytest.mark.parametrize(
    ("dataset", "looked_for", "option"),
    [
        ("chexpert", ["CheXpert-v1.0/train.csv", "CheXpert-v1.0-small/train.csv"], "--option release_dir="),
        ("embed", ["tables/EMBED_OpenData_clinical_reduced.csv", "EMBED_OpenData_metadata_reduced.csv"], "--option tables_dir="),
        ("fairvision", ["Glaucoma/ReadMe/data_summary_glaucoma.csv", "data_summary_amd.csv"], "--option subsets="),
        ("fitzpatrick", ["fitzpatrick17k.csv", "images"], "--option image_dir="),
    ],
)
def test_a_folder_with_no_layout_names_what_was_looked_for(
    dataset: str, looked_for: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "raw").mkdir()
    rc, _, err = _ingest(dataset, tmp_path / "raw", tmp_path / "results", capsys)
    assert rc == 2 and f"no published layout of {dataset} found" in err
    assert all(name in err for name in looked_for) and option in err


def test_options_override_detection_and_unknown_options_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _write("chexpert", tmp_path / "chexpert", "small")
    options = ["--option", "release_dir=CheXpert-v1.0-small", "--option", "image_size=32"]
    rc, out, err = _ingest("chexpert", raw, tmp_path / "r", capsys, *options)
    assert rc == 0, err
    assert _snapshot(out).task.input_shape == (1, 32, 32)  # values are read as YAML scalars
    rc, _, err = _ingest("chexpert", raw, tmp_path / "r", capsys, "--option", "release_dir=elsewhere")
    assert rc == 2 and "elsewhere/train.csv" in err and "file not found" in err
    rc, _, err = _ingest("chexpert", raw, tmp_path / "r", capsys, "--option", "image_sise=32")
    assert rc == 2 and "unknown option(s) image_sise" in err and "image_size, release_dir" in err
    rc, _, err = _ingest("chexpert", raw, tmp_path / "r", capsys, "--option", "image_size")
    assert rc == 2 and "KEY=VALUE" in err

"""A built-in dataset described by a spec gives the same snapshot as its adapter: MIMIC-IV-ED and
Fitzpatrick17k (docs/examples/own_data/mimic_iv_ed.yaml, fitzpatrick17k.yaml) on the synthetic writers'
output, planted faults included: same raw/accepted/quarantined counts, the same rows accepted with
the same split, the same rows quarantined at the same stage, the same subgroup counts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tasks.datasets import get_dataset
from tasks.ingest.snapshot import build_snapshot
from tasks.synthetic import get_synthetic_writer
from tasks.synthetic.own_data import EXAMPLES

SECRET = b"spec-equivalence-test-secret-0123"


def _compare(dataset: str, spec: str, n_patients: int, tmp: Path) -> pd.DataFrame:
    raw = tmp / "raw"
    get_synthetic_writer(dataset)(raw, n_patients, 0)
    if dataset == "mimic-iv-ed":  # plant what a real extract holds: a minor, a non-number, a repeated stay
        master = pd.read_csv(raw / "master_dataset.csv", dtype=str, keep_default_na=False)
        faults = master.iloc[:3].copy()
        faults["stay_id"] = ["1", "2", master["stay_id"].iloc[5]]
        faults.iloc[0, faults.columns.get_loc("age")] = "12"
        faults.iloc[1, faults.columns.get_loc("triage_sbp")] = "high"
        pd.concat([master, faults]).to_csv(raw / "master_dataset.csv", index=False)
    built_in = build_snapshot(get_dataset(dataset), raw, tmp / "results", SECRET)
    declared = build_snapshot(get_dataset(f"spec:{EXAMPLES / spec}"), raw, tmp / "results", SECRET)
    assert (declared.n_raw, declared.n_accepted, declared.n_quarantined) == (built_in.n_raw, built_in.n_accepted, built_in.n_quarantined)
    assert built_in.n_quarantined > 0  # the writers plant faults: the comparison covers the quarantine too

    def rows(snap: object, cols: list[str]) -> set[tuple]:
        return set(snap.records[cols].itertuples(index=False, name=None))  # type: ignore[attr-defined]

    assert rows(declared, ["source_file", "source_row", "split"]) == rows(built_in, ["source_file", "source_row", "split"])
    qa, qb = built_in.quarantine(), declared.quarantine()
    assert set(zip(qa["source_row"], qa["stage"], strict=True)) == set(zip(qb["source_row"], qb["stage"], strict=True))
    assert declared.attributes == built_in.attributes
    for attr in built_in.attributes:
        assert rows(declared, ["source_row", attr]) == rows(built_in, ["source_row", attr]), attr
    labels = [c for c in built_in.records.columns if c.startswith("y_")]
    assert rows(declared, ["source_row", *labels]) == rows(built_in, ["source_row", *labels])
    return qb


@pytest.mark.heavy  # two ingests through the 70-column contract: 1-3 min on 2 shared cores
def test_mimic_iv_ed_spec_matches_the_adapter(tmp_path: Path) -> None:
    _compare("mimic-iv-ed", "mimic_iv_ed.yaml", 150, tmp_path)


def test_fitzpatrick_spec_matches_the_adapter(tmp_path: Path) -> None:
    q = _compare("fitzpatrick", "fitzpatrick17k.yaml", 60, tmp_path)
    # the filter lists excluded md5 hashes (identifiers): its reason names the filter, not the hashes
    assert set(q.loc[q["stage"] == "cohort", "reason"]) == {"cohort filter filters.0 (on identifier md5hash; expression withheld) not met"}

"""MIMIC-IV-ED: out-of-range triage vitals are repaired as the benchmark does (Xie et al. 2022,
data_general_processing.py), never a reason to drop the stay.

The expected values are worked out here from the benchmark's published limits (temperature in °C
after conversion: outlier 14.2 / 47, valid 26 / 45; heart rate outlier 390, valid 350; SpO2 outlier
150, valid 100; pain outlier = valid = 10) and its median imputation over the training split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.datasets import get_dataset
from tasks.datasets.quarantine import Quarantine
from tasks.synthetic.mimic_iv_ed import generate_ed_cohort

LINE = 2  # CSV line of frame row 0 (header = line 1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict[str, int], Path]:
    df, _ = generate_ed_cohort(60, seed=5)
    ok = df.index[(df["age"] >= 18) & df["triage_acuity"].notna() & df[["triage_temperature", "triage_heartrate"]].notna().all(axis=1)]
    rows = dict(zip(["celsius", "hr400", "spo2_120", "pain13", "temp_hot", "temp_cold"], ok[:6], strict=True))
    df.loc[rows["celsius"], "triage_temperature"] = 37.0  # typed in °C: 2.8 °C after conversion -> missing
    df.loc[rows["hr400"], "triage_heartrate"] = 400.0  # > 390 -> missing
    df.loc[rows["spo2_120"], "triage_o2sat"] = 120.0  # in (100, 150] -> clipped to 100
    df.loc[rows["pain13"], "triage_pain"] = 13.0  # > 10 -> missing
    df.loc[rows["temp_hot"], "triage_temperature"] = 114.8  # 46 °C in (45, 47] -> clipped to 45
    df.loc[rows["temp_cold"], "triage_temperature"] = 75.2  # 24 °C in [14.2, 26) -> clipped to 26
    raw = tmp_path_factory.mktemp("ed")
    df.to_csv(raw / "master_dataset.csv", index=False)
    return df, rows, raw


@pytest.fixture(scope="module")
def read(planted: tuple[pd.DataFrame, dict[str, int], Path]) -> tuple[pd.DataFrame, Quarantine]:
    q = Quarantine()
    return get_dataset("mimic-iv-ed").read_records(planted[2], q).set_index("_source_row"), q


def test_bad_vitals_keep_every_adult_stay_with_the_benchmarks_values(
    planted: tuple[pd.DataFrame, dict[str, int], Path], read: tuple[pd.DataFrame, Quarantine]
) -> None:
    df, rows, _ = planted
    records, q = read

    adults = df.index[(df["age"] >= 18) & df["triage_acuity"].notna()]
    assert set(records.index) == {i + LINE for i in adults}  # every adult stay with an acuity is kept
    dropped = q.frame()
    assert set(dropped["stage"]) == {"cohort"} and set(dropped["column"]) <= {"age", "triage_acuity"}

    train = records["split"] == "train"
    # the benchmark's imputation: the training median of the repaired column (the set-to-missing cells excluded)
    converted = (df["triage_temperature"] - 32) * 5 / 9
    src = df.set_index(df.index + LINE)
    temp_train = converted.set_axis(df.index + LINE).loc[records.index[train]].drop(rows["celsius"] + LINE).clip(26, 45)
    hr_train = src.loc[records.index[train], "triage_heartrate"].drop(rows["hr400"] + LINE)
    pain_train = src.loc[records.index[train], "triage_pain"].drop(rows["pain13"] + LINE)

    at = lambda name, col: records.loc[rows[name] + LINE, col]  # noqa: E731
    assert at("celsius", "triage_temperature") == pytest.approx(temp_train.median())
    assert at("hr400", "triage_heartrate") == pytest.approx(hr_train.median())
    assert at("spo2_120", "triage_o2sat") == 100.0
    assert at("pain13", "triage_pain") == pytest.approx(pain_train.median())
    assert at("temp_hot", "triage_temperature") == 45.0 and at("temp_cold", "triage_temperature") == 26.0
    untouched = records.drop(index=[r + LINE for r in rows.values()])
    assert np.allclose(untouched["triage_heartrate"].dropna(), src.loc[untouched.index, "triage_heartrate"].fillna(hr_train.median()))


def test_every_repair_is_in_the_ledger_with_its_rule(
    planted: tuple[pd.DataFrame, dict[str, int], Path], read: tuple[pd.DataFrame, Quarantine]
) -> None:
    rows = planted[1]
    records, q = read
    ledger = q.repairs_frame().set_index(["source_row", "column"])
    expected = {
        (rows["celsius"] + LINE, "triage_temperature"): ("outlier_to_missing", 37.0),
        (rows["hr400"] + LINE, "triage_heartrate"): ("outlier_to_missing", 400.0),
        (rows["spo2_120"] + LINE, "triage_o2sat"): ("clipped_to_valid_range", 120.0),
        (rows["pain13"] + LINE, "triage_pain"): ("outlier_to_missing", 13.0),
        (rows["temp_hot"] + LINE, "triage_temperature"): ("clipped_to_valid_range", 114.8),
        (rows["temp_cold"] + LINE, "triage_temperature"): ("clipped_to_valid_range", 75.2),
    }
    assert set(ledger.index) == set(expected)  # the synthetic cohort itself has no out-of-range vital
    for (line, column), (rule, original) in expected.items():
        entry = ledger.loc[(line, column)]
        assert entry["rule"] == rule and entry["original"] == pytest.approx(original)
        assert entry["repaired"] == pytest.approx(records.loc[line, column])  # the value the model sees
        assert column in entry["reason"] and "benchmark rule" in entry["reason"]
    assert "37 °F as recorded" in ledger.loc[(rows["celsius"] + LINE, "triage_temperature"), "reason"]
    assert set(ledger.reset_index()["source_file"]) == {"master_dataset.csv"}

"""MIMIC-IV-ED triage vitals: the benchmark's outlier handling (Xie et al. 2022, nliulab/mimic4ed-benchmark,
``data_general_processing.py`` with ``helpers.outlier_removal_imputation``), as facts restated here.

Temperature is first converted from °F to °C. Then for each vital, with its four limits
``outlier_low <= valid_low <= valid_high <= outlier_high``:

* below ``outlier_low`` or above ``outlier_high`` -> set to missing (and later imputed);
* in ``[outlier_low, valid_low)`` -> clipped to ``valid_low``; in ``(valid_high, outlier_high]`` -> clipped
  to ``valid_high``;
* otherwise kept. Missing stays missing.

Missing values (original or set so) are then imputed with the training split's median (scikit-learn's
``SimpleImputer(strategy="median")`` fitted on the training stays). The stay is always kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.datasets.quarantine import Quarantine
from tasks.datasets.reasons import vital_repair


@dataclass(frozen=True)
class VitalRange:
    outlier_low: float
    valid_low: float
    valid_high: float
    outlier_high: float
    unit: str


# The benchmark's vitals_valid_range (temperature in °C, after conversion).
VITAL_RANGES: dict[str, VitalRange] = {
    "triage_temperature": VitalRange(14.2, 26.0, 45.0, 47.0, "°C"),
    "triage_heartrate": VitalRange(0.0, 0.0, 350.0, 390.0, "/min"),
    "triage_resprate": VitalRange(0.0, 0.0, 300.0, 330.0, "/min"),
    "triage_o2sat": VitalRange(0.0, 0.0, 100.0, 150.0, "%"),
    "triage_sbp": VitalRange(0.0, 0.0, 375.0, 375.0, "mmHg"),
    "triage_dbp": VitalRange(0.0, 0.0, 375.0, 375.0, "mmHg"),
    "triage_pain": VitalRange(0.0, 0.0, 10.0, 10.0, "(0-10)"),
    "triage_acuity": VitalRange(1.0, 1.0, 5.0, 5.0, "(ESI 1-5)"),
}

TO_MISSING = "outlier_to_missing"
CLIPPED = "clipped_to_valid_range"


def fahrenheit_to_celsius(values: pd.Series) -> pd.Series:
    return (values - 32.0) * 5.0 / 9.0


def repair_and_impute(df: pd.DataFrame, train: np.ndarray, quarantine: Quarantine) -> pd.DataFrame:
    """Apply the benchmark's outlier rules to the triage vitals of ``df`` (temperature already in °C),
    impute every missing vital with the median of the ``train`` rows (boolean mask aligned with ``df``),
    and record each outlier repair in ``quarantine``'s repairs ledger. Returns a copy; no row is dropped.

    ``df`` needs the VITAL_RANGES columns as float64 and ``_source_file``, ``_source_row``; the raw
    temperature in °F is read from ``_raw_triage_temperature`` for the ledger's ``original`` column.
    """
    out = df.copy()
    pending: list[tuple[str, str, pd.Series, pd.Series]] = []  # (column, rule, mask, original), imputed values known later
    for col, r in VITAL_RANGES.items():
        x = out[col].astype("float64")
        to_missing = (x < r.outlier_low) | (x > r.outlier_high)
        clip_low = ~to_missing & (x < r.valid_low)
        clip_high = ~to_missing & (x > r.valid_high)
        original = out["_raw_triage_temperature"] if col == "triage_temperature" else x
        pending.append((col, TO_MISSING, to_missing, original))
        pending.append((col, CLIPPED, clip_low | clip_high, original))
        out[col] = x.mask(to_missing).mask(clip_low, r.valid_low).mask(clip_high, r.valid_high)
    medians = {col: float(out.loc[train, col].median()) for col in VITAL_RANGES}
    for col, median in medians.items():
        out[col] = out[col].fillna(median)
    for col, rule, mask, original in pending:
        if mask.any():
            rows = out[mask]
            converted = df.loc[mask, col].astype("float64")
            recorded = [f"{o:g} °F" if col == "triage_temperature" else "" for o in original.loc[rows.index]]
            reasons = pd.Series(
                [vital_repair(col, rule, v, VITAL_RANGES[col], medians[col], r) for v, r in zip(converted, recorded, strict=True)],
                index=rows.index,
                dtype=object,
            )
            quarantine.add_repairs(rows, col, rule, original, out[col], reasons)
    return out

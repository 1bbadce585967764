"""Tables people can read: subgroup display order and labels, the opening paragraph, the real report's layout."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.report.tables import display_subgroups, opening_paragraph
from tasks.risk.subgroup import MISSING_GROUP, TABLE_COLUMNS, suppress_small_cells


def _table() -> pd.DataFrame:
    rows = [
        ("race", "White", 300, 0.02, 0.8),
        ("race", "Black", 120, 0.10, 0.001),
        ("race", MISSING_GROUP, 40, 0.05, 0.3),
        ("race", "Tiny", 4, 0.5, 0.9),
        ("sex", "F", 250, 0.04, 0.5),
    ]
    records = []
    for attr, group, units, share, p in rows:
        row: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS, 0.0)
        row.update(attribute=attr, group=group, units=units, share_above=share, p_holm=p, share_lo=share / 2, share_hi=share * 2)
        row.update(n_above=round(units * share), top_observed=5 if group == "Black" else 1, top_expected=1.5)
        records.append(row)
    frame = pd.DataFrame(records)
    frame.insert(0, "level", "patient")
    return suppress_small_cells(frame, 10)


def test_subgroups_sorted_key_columns_first_and_suppressed_labelled() -> None:
    shown = display_subgroups(_table(), 10)
    assert list(shown.columns[:6]) == ["attribute", "group", "patients", "share_above", "share 95% CI", "at risk"]
    assert list(shown["group"]) == ["Black", "(missing)", "F", "White", "Tiny"]  # by p_holm, suppressed last
    tiny = shown[shown["group"] == "Tiny"].iloc[0]
    assert tiny["patients"] == "suppressed (n < 10)" and tiny["share_above"] == ""
    assert "<NA>" not in shown.to_string() and "nan" not in shown.to_string().lower()


def test_opening_paragraph_reads_the_headline_with_or_without_the_null_model() -> None:
    h = {
        "n_models": 48,
        "n_patients": 2000,
        "risk_threshold": 0.9,
        "n_patients_above_threshold": 37,
        "share_patients_above_threshold": 0.0186,
    }
    text = opening_paragraph("mimic-iv-ed", h, _table())
    assert "48 shadow models" in text and "2000 patients of mimic-iv-ed" in text and "37 patients (1.9%)" in text
    assert "race = Black" in text and "What to do" in text and "White" not in text
    h13 = {**h, "n_patients_expected_by_chance": 18.2, "n_patients_at_risk": 9, "fdr": 0.05, "evidence": "sufficient"}
    text = opening_paragraph("mimic-iv-ed", h13, _table())
    assert "chance alone would give about 18.2" in text and "9 are exposed beyond chance (false discovery rate 0.05)" in text
    none = {**h13, "n_patients_at_risk": 0, "evidence": "insufficient", "evidence_reason": "8 models are too few"}
    text = opening_paragraph("mimic-iv-ed", none, _table().iloc[0:0])
    assert "insufficient: 8 models are too few" in text and "nothing beyond routine re-audits" in text


@pytest.mark.slow
def test_the_real_report_is_readable(demo_audit: dict[str, Any]) -> None:
    report = Path(demo_audit["result"]["files"]["report_html"])
    html = report.read_text()
    assert "&lt;NA&gt;" not in html and "<NA>" not in html and ">nan<" not in html.lower()
    assert ">None<" not in html and ">NaN<" not in html  # missing values only ever shown as NULL
    assert re.search(r'<p class="lead">This audit trained 8 shadow models on random halves of the \d+ patients', html)
    sub = pd.read_csv(report.parent / "subgroup_risk.csv")
    n_patient_rows = int((sub["level"] == "patient").sum())
    start = html.index("<h2>Subgroups</h2>")
    table = html[start : html.index("<h2>", start + 5)]
    assert table.count("<tr>") == n_patient_rows, "every subgroup row is in the report (the header row is <tr style=...>)"
    assert "showing 20 of" in html and 'href="patient_risk.csv"' in html
    assert "max-width:1180px" in html and "overflow-x:auto" in html
    assert np.isfinite(demo_audit["result"]["headline"]["share_patients_above_threshold"])

"""Patient-level aggregation (design D14)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.risk.patient import patient_llr, patient_membership, patient_risk


def test_patient_risk_matches_groupby():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 50, 1000)
    auc = rng.uniform(0.5, 1.0, 1000)
    auc[rng.random(1000) < 0.1] = np.nan
    codes[codes == 7] = 8  # patient 7 has no records
    auc[codes == 9] = np.nan  # patient 9 has only degenerate records
    out = patient_risk(auc, codes, 50)
    assert list(out.index) == list(range(50))
    ref = pd.DataFrame({"p": codes, "a": auc}).groupby("p")["a"].agg(["max", "mean", "count", "size"])
    ref = ref.reindex(range(50))
    np.testing.assert_allclose(out["risk_max"], ref["max"], equal_nan=True)
    np.testing.assert_allclose(out["risk_mean"], ref["mean"], equal_nan=True)
    assert out["n_scored"].tolist() == ref["count"].fillna(0).astype(int).tolist()
    assert out["n_records"].tolist() == ref["size"].fillna(0).astype(int).tolist()
    assert out.loc[7, "n_records"] == 0 and np.isnan(out.loc[7, "risk_max"])
    assert out.loc[9, "n_scored"] == 0 and out.loc[9, "n_records"] > 0 and np.isnan(out.loc[9, "risk_mean"])
    with pytest.raises(ValueError):
        patient_risk(auc, codes, 10)


def test_patient_llr_sums_records():
    llr = np.array([[1.0, 2.0, np.nan, -1.0], [0.5, np.nan, np.nan, 3.0]])
    codes = np.array([0, 0, 1, 2])
    out = patient_llr(llr, codes, 4)
    np.testing.assert_allclose(out, [[3.0, np.nan, -1.0, np.nan], [0.5, np.nan, 3.0, np.nan]])
    np.testing.assert_allclose(patient_llr(llr[0], codes, 4), out[0])


def test_patient_llr_improves_detection_when_patients_have_many_records():
    # the combined test should beat any single record: member records all shift by +0.5
    from tasks.attacks.auc import roc_auc

    rng = np.random.default_rng(1)
    n_pat, per = 400, 8
    codes = np.repeat(np.arange(n_pat), per)
    member = rng.random(n_pat) < 0.5
    llr = rng.normal(size=(1, codes.size)) + 0.5 * member[codes]
    rec_auc = roc_auc(llr[0], member[codes])
    pat_auc = roc_auc(patient_llr(llr, codes, n_pat)[0], patient_membership(member[codes][None], codes, n_pat)[0])
    assert pat_auc > rec_auc + 0.15


def test_patient_membership():
    codes = np.array([0, 0, 1, 2, 2])
    mem = np.array([[True, True, False, True, True], [False, False, True, False, False]])
    out = patient_membership(mem, codes, 4)
    np.testing.assert_array_equal(out, [[True, False, True, False], [False, True, False, False]])
    bad = mem.copy()
    bad[1, 4] = True
    with pytest.raises(ValueError, match="disagree"):
        patient_membership(bad, codes, 4)

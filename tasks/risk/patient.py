"""Patient-level risk from record-level results (method §4.5, design D14).

Records of a patient are IN or OUT together (masks are drawn per patient, design D6), so a patient's risk
aggregates their records: the max of the record AUCs (paper default), the mean, and -- for attacks on
target models -- the sum of the records' log-likelihood ratios (the likelihood-ratio test for the
patient as a whole when the records' scores are treated as independent given membership).

``patient_codes`` are dense integer codes 0..n_patients-1 (e.g. from ``pandas.factorize`` of the
pseudonymous patient key); everything is vectorised with bincount / ufunc.at.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _codes(patient_codes: np.ndarray, n: int, n_patients: int) -> np.ndarray:
    c = np.asarray(patient_codes)
    if c.shape != (n,):
        raise ValueError(f"patient_codes must have shape ({n},), got {c.shape}")
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError("patient_codes must be integers")
    if c.size and (c.min() < 0 or c.max() >= n_patients):
        raise ValueError(f"patient_codes must lie in [0, {n_patients})")
    return c.astype(np.intp, copy=False)


def patient_risk(record_auc: np.ndarray, patient_codes: np.ndarray, n_patients: int) -> pd.DataFrame:
    """Aggregate record AUCs per patient.

    record_auc: (N,) float (NaN = degenerate record, ignored); patient_codes: (N,) int in
    [0, n_patients). Returns a DataFrame indexed 0..n_patients-1 with columns ``n_records`` (int64,
    all records), ``n_scored`` (int64, records with a finite AUC), ``risk_max``, ``risk_mean``
    (float64; NaN when ``n_scored`` is 0).
    """
    auc = np.asarray(record_auc, dtype=np.float64)
    if auc.ndim != 1:
        raise ValueError(f"record_auc must be 1-D, got {auc.shape}")
    codes = _codes(patient_codes, auc.size, n_patients)
    ok = np.isfinite(auc)
    n_records = np.bincount(codes, minlength=n_patients).astype(np.int64)
    n_scored = np.bincount(codes[ok], minlength=n_patients).astype(np.int64)
    risk_max = np.full(n_patients, -np.inf)
    np.maximum.at(risk_max, codes[ok], auc[ok])
    total = np.bincount(codes[ok], weights=auc[ok], minlength=n_patients)
    none = n_scored == 0
    risk_max[none] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        risk_mean = np.where(none, np.nan, total / n_scored)
    return pd.DataFrame(
        {"n_records": n_records, "n_scored": n_scored, "risk_max": risk_max, "risk_mean": risk_mean},
        index=pd.RangeIndex(n_patients),
    )


def patient_llr(record_llr: np.ndarray, patient_codes: np.ndarray, n_patients: int) -> np.ndarray:
    """Patient-level test statistic: the sum of the patient's record log-likelihood ratios.

    record_llr: (T, N) (or (N,)) per-record LLRs of T target models (e.g. online LiRA);
    patient_codes: (N,). Returns (T, n_patients) float64 (or (n_patients,)); NaN records are ignored,
    a patient with no finite record LLR gets NaN.
    """
    x = np.asarray(record_llr, dtype=np.float64)
    one = x.ndim == 1
    x = np.atleast_2d(x)
    if x.ndim != 2:
        raise ValueError(f"record_llr must be (T, N), got {x.shape}")
    t, n = x.shape
    codes = _codes(patient_codes, n, n_patients)
    flat = (np.arange(t)[:, None] * n_patients + codes[None, :]).ravel()
    vals = x.ravel()
    ok = np.isfinite(vals)
    sums = np.bincount(flat[ok], weights=vals[ok], minlength=t * n_patients).reshape(t, n_patients)
    cnt = np.bincount(flat[ok], minlength=t * n_patients).reshape(t, n_patients)
    sums[cnt == 0] = np.nan
    return sums[0] if one else sums


def patient_membership(record_membership: np.ndarray, patient_codes: np.ndarray, n_patients: int) -> np.ndarray:
    """Patient membership from record membership.

    record_membership: (T, N) (or (N,)) bool; patient_codes: (N,). Returns (T, n_patients) bool (or
    (n_patients,)). Raises ValueError if the records of one patient disagree for some target (masks
    are per patient, so that would be a data error). A patient without records is False.
    """
    x = np.asarray(record_membership, dtype=bool)
    one = x.ndim == 1
    x = np.atleast_2d(x)
    t, n = x.shape
    codes = _codes(patient_codes, n, n_patients)
    flat = (np.arange(t)[:, None] * n_patients + codes[None, :]).ravel()
    n_true = np.bincount(flat[x.ravel()], minlength=t * n_patients).reshape(t, n_patients)
    n_all = np.bincount(codes, minlength=n_patients)[None, :]
    mixed = (n_true > 0) & (n_true < n_all)
    if mixed.any():
        ti, pi = np.argwhere(mixed)[0]
        raise ValueError(
            f"records of patient code {pi} disagree on membership for target {ti} ({int(mixed.sum())} patient/target pairs in all)"
        )
    out = n_true > 0
    return out[0] if one else out

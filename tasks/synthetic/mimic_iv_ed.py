"""A synthetic emergency-department cohort in the MIMIC-IV-ED benchmark's master_dataset.csv layout.

Deterministic from a seed. Patients have one to many ED stays; race (with a small Asian minority
and MIMIC's raw race strings), sex, age, insurance; triage vitals, chief complaints, Charlson and
Elixhauser flags; hospitalisation depends on them through a logistic model (AUROC about 0.8).

Planted, as the paper found them in real data (ground truth in ``_synthetic_truth.csv``, which the
adapter ignores):

* ``rare_presentation``: a few patients with a rare disease (HIV + lymphoma flags, fever,
  tachycardia, hypoxia) whose outcome the features cannot predict;
* ``minority_pattern``: the small Asian group follows a different outcome rule than the majority;
* ``atypical_stay``: about 1% of stays with an unusual presentation whose outcome contradicts a
  confident prediction (an atypical course or a mislabeled record); as many unusual presentations
  follow the usual rule, so the presentation alone does not give the outcome away.
A few minors and missing vitals are included so the cohort filter and imputation are exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.datasets.ed_features import CCI, CHIEF_COMPLAINTS, ECI, UTILISATION
from tasks.synthetic import register_synthetic

RACES = (
    ("WHITE", 0.55),
    ("BLACK/AFRICAN AMERICAN", 0.22),
    ("HISPANIC/LATINO - PUERTO RICAN", 0.08),
    ("OTHER", 0.05),
    ("UNKNOWN", 0.03),
    ("ASIAN - CHINESE", 0.015),
    ("ASIAN", 0.01),
    ("WHITE - OTHER EUROPEAN", 0.02),
)
_CCI_BASE = {
    "MI": 0.05,
    "CHF": 0.07,
    "PVD": 0.04,
    "Stroke": 0.04,
    "Dementia": 0.03,
    "Pulmonary": 0.1,
    "Rheumatic": 0.02,
    "PUD": 0.02,
    "Liver1": 0.04,
    "DM1": 0.08,
    "DM2": 0.03,
    "Paralysis": 0.01,
    "Renal": 0.06,
    "Cancer1": 0.05,
    "Liver2": 0.01,
    "Cancer2": 0.02,
    "HIV": 0.003,
}
_ECI_BASE = {
    "Arrhythmia": 0.1,
    "Valvular": 0.04,
    "PHTN": 0.02,
    "HTN1": 0.25,
    "HTN2": 0.05,
    "NeuroOther": 0.05,
    "Hypothyroid": 0.06,
    "Lymphoma": 0.004,
    "Coagulopathy": 0.03,
    "Obesity": 0.08,
    "WeightLoss": 0.02,
    "FluidsLytes": 0.08,
    "BloodLoss": 0.01,
    "Anemia": 0.08,
    "Alcohol": 0.05,
    "Drugs": 0.05,
    "Psychoses": 0.02,
    "Depression": 0.1,
}
TRUTH_FILE = "_synthetic_truth.csv"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate_ed_cohort(n_patients: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (master_dataset frame, truth frame). Truth: stay_id, source_row, plant."""
    if n_patients < 50:
        raise ValueError(f"n_patients must be at least 50, got {n_patients}")
    rng = np.random.default_rng(seed)
    # --- patients
    subject_ids = rng.choice(np.arange(10_000_000, 19_999_999), size=n_patients, replace=False)
    race_names = np.array([r for r, _ in RACES])
    race_p = np.array([p for _, p in RACES])
    race = rng.choice(race_names, size=n_patients, p=race_p / race_p.sum())
    gender = rng.choice(np.array(["F", "M"]), size=n_patients)
    base_age = np.clip(rng.gamma(6.0, 9.0, size=n_patients) + 12, 14, 99)
    minors = rng.random(n_patients) < 0.01  # excluded by the benchmark's age >= 18 filter
    base_age[minors] = rng.uniform(14, 17, size=minors.sum())
    frailty = rng.normal(0, 1, size=n_patients)
    rare = rng.random(n_patients) < max(3 / n_patients, 0.004)
    n_stays = 1 + rng.negative_binomial(1, 0.45, size=n_patients)
    n_stays = np.minimum(n_stays, 25)
    # --- stays
    pid = np.repeat(np.arange(n_patients), n_stays)
    n = len(pid)
    stay_ids = rng.choice(np.arange(30_000_000, 39_999_999), size=n, replace=False)
    age = np.floor(base_age[pid] + rng.uniform(0, 1, size=n))
    asian = np.char.startswith(race[pid].astype(str), "ASIAN")
    sev = 0.8 * frailty[pid] + rng.normal(0, 1, size=n) + 0.02 * (age - 50)
    rare_s = rare[pid]

    cci = {c: (rng.random(n) < p * (1 + np.clip(age - 40, 0, None) / 40)).astype(int) for c, p in _CCI_BASE.items()}
    eci = {c: (rng.random(n) < p * (1 + np.clip(age - 40, 0, None) / 60)).astype(int) for c, p in _ECI_BASE.items()}
    cci["HIV"][rare_s] = 1
    eci["Lymphoma"][rare_s] = 1
    comorb = sum(cci.values()) + 0.5 * sum(eci.values())

    util = {}
    for kind, rate in (("ed", 0.6), ("hosp", 0.3), ("icu", 0.05)):
        lam = rate * np.exp(0.4 * frailty[pid])
        d30 = rng.poisson(lam * 0.15)
        d90 = d30 + rng.poisson(lam * 0.3)
        d365 = d90 + rng.poisson(lam * 0.9)
        util.update({f"n_{kind}_30d": d30, f"n_{kind}_90d": d90, f"n_{kind}_365d": d365})

    temp_f = 98.2 + 0.6 * np.clip(sev, 0, None) + rng.normal(0, 0.7, n)
    hr = 80 + 9 * sev + rng.normal(0, 10, n)
    rr = 17 + 1.5 * sev + rng.normal(0, 2, n)
    o2 = np.clip(98 - 1.2 * np.clip(sev, 0, None) + rng.normal(0, 1.2, n), 60, 100)
    sbp = 132 - 4 * sev + rng.normal(0, 18, n)
    dbp = 78 - 2 * sev + rng.normal(0, 11, n)
    pain = np.clip(np.round(rng.uniform(0, 10, n) * (rng.random(n) < 0.7)), 0, 10)
    acuity = np.clip(np.round(3 - 0.7 * sev + rng.normal(0, 0.5, n)), 1, 5)
    # rare disease: a distinctive, extreme presentation
    temp_f[rare_s] = 103.5 + rng.normal(0, 0.5, rare_s.sum())
    hr[rare_s] = 135 + rng.normal(0, 6, rare_s.sum())
    o2[rare_s] = 84 + rng.normal(0, 2, rare_s.sum())

    cc_idx = rng.integers(0, len(CHIEF_COMPLAINTS) + 4, size=n)  # some stays have no listed complaint
    chief = {c: (cc_idx == i).astype(int) for i, c in enumerate(CHIEF_COMPLAINTS)}
    chief["fever_chills"][rare_s] = 1

    logit = (
        -1.6
        + 0.9 * sev
        + 0.35 * comorb
        + 0.25 * util["n_hosp_365d"]
        + 0.6 * (3 - acuity)
        + 0.015 * (age - 55)
        + 0.8 * chief["chest_pain"]
        + 0.5 * chief["shortness_of_breath"]
        - 0.6 * chief["back_pain"]
        - 0.4 * chief["headache"]
    )
    # The small group follows another rule (e.g. a different care pathway): acuity acts the other way.
    logit = np.where(asian, -1.0 - 0.9 * (3 - acuity) + 0.6 * chief["abdominal_pain"] + 1.2 * (temp_f > 99.5), logit)
    logit = 2.5 * logit  # a sharper rule: typical stays are predictable, so what stands out is memorised
    p = _sigmoid(logit)
    y = rng.random(n) < p
    y[rare_s] = rng.random(rare_s.sum()) < 0.5
    # Unusual presentations on about 2% of stays: several chief complaints at once, many recent ICU
    # stays and maximal pain -- features the outcome rule does not use, so they neither explain nor
    # hide the outcome. Half follow the usual rule, half have the opposite outcome (the atypical
    # stays): a model gets an atypical stay right only by memorising it.
    eligible = np.flatnonzero((np.abs(logit) > 2.5) & ~rare_s & ~asian)
    k = max(6, round(0.02 * n))
    unusual = rng.choice(eligible, size=min(k, len(eligible)), replace=False)
    atypical = unusual[: len(unusual) // 2]
    y[unusual] = logit[unusual] > 0
    y[atypical] = ~y[atypical]
    neutral = ["cough", "nausea_vomiting", "fever_chills", "syncope", "dizziness"]
    for j in unusual:
        for c in CHIEF_COMPLAINTS:
            chief[c][j] = 0
        for c in rng.choice(neutral, size=3, replace=False):
            chief[c][j] = 1
        util["n_icu_90d"][j] = util["n_icu_30d"][j] + rng.integers(2, 6)
        util["n_icu_365d"][j] = util["n_icu_90d"][j] + rng.integers(3, 9)
        pain[j] = 10
    # Rare disease: each patient's presentation is extreme in its own way.
    r_idx = np.flatnonzero(rare_s)
    dbp[r_idx] = rng.uniform(35, 120, size=len(r_idx))
    pain[r_idx] = rng.integers(0, 11, size=len(r_idx))
    for j in r_idx:
        cci[rng.choice(list(_CCI_BASE))][j] = 1
        util["n_ed_365d"][j] = util["n_ed_90d"][j] + rng.integers(3, 15)

    insurance = np.where(age >= 65, "Medicare", np.where(rng.random(n) < 0.35, "Medicaid", "Other"))
    insurance = np.where(rng.random(n) < 0.03, "", insurance)

    def missing(x: np.ndarray, rate: float) -> np.ndarray:
        x = x.astype(float).copy()
        x[rng.random(len(x)) < rate] = np.nan
        return x

    intime = pd.Timestamp("2130-01-01") + pd.to_timedelta(rng.integers(0, 3650 * 24 * 60, size=n), unit="min")
    df = pd.DataFrame(
        {
            "subject_id": subject_ids[pid],
            "hadm_id": np.where(y, rng.integers(20_000_000, 29_999_999, size=n), 0),
            "stay_id": stay_ids,
            "intime": intime.strftime("%Y-%m-%d %H:%M:%S"),
            "gender": gender[pid],
            "race": race[pid],
            "insurance": insurance,
            "age": age,
            "outcome_hospitalization": y,
            **{u: util[u] for u in UTILISATION},
            "triage_temperature": missing(np.round(temp_f, 1), 0.04),
            "triage_heartrate": missing(np.round(hr), 0.02),
            "triage_resprate": missing(np.round(rr), 0.03),
            "triage_o2sat": missing(np.round(o2), 0.03),
            "triage_sbp": missing(np.round(np.clip(sbp, 50, 260)), 0.02),
            "triage_dbp": missing(np.round(np.clip(dbp, 20, 160)), 0.02),
            "triage_pain": missing(pain, 0.05),
            "triage_acuity": missing(acuity, 0.01),
            **{f"chiefcom_{c}": chief[c] for c in CHIEF_COMPLAINTS},
            **{f"cci_{c}": cci[c] for c in CCI},
            **{f"eci_{c}": eci[c] for c in ECI},
        }
    )
    df["hadm_id"] = df["hadm_id"].astype("Int64").where(df["hadm_id"] > 0)
    df = df.sort_values("intime", kind="stable").reset_index(drop=True)
    # Truth is recorded after the sort so source_row matches the CSV line (header = line 1).
    plant = np.full(n, "", dtype=object)
    plant[np.isin(df["stay_id"], stay_ids[atypical])] = "atypical_stay"
    plant[np.isin(df["stay_id"], stay_ids[rare_s])] = "rare_presentation"
    plant[(plant == "") & np.isin(df["stay_id"], stay_ids[asian])] = "minority_pattern"
    truth = pd.DataFrame({"stay_id": df["stay_id"], "source_row": np.arange(n) + 2, "plant": plant})
    return df, truth[truth["plant"] != ""].reset_index(drop=True)


@register_synthetic("mimic-iv-ed")
def write_ed_cohort(raw_dir: Path, n_patients: int = 2000, seed: int = 0) -> Path:
    """Write master_dataset.csv (+ the truth file) into ``raw_dir``; returns the CSV path."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    df, truth = generate_ed_cohort(n_patients, seed)
    path = raw_dir / "master_dataset.csv"
    df.to_csv(path, index=False)
    truth.to_csv(raw_dir / TRUTH_FILE, index=False)
    return path

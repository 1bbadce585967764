"""The 64 MIMIC-IV-ED benchmark input features, in the order the paper's models consume them."""

from __future__ import annotations

CHIEF_COMPLAINTS = (
    "chest_pain",
    "abdominal_pain",
    "headache",
    "shortness_of_breath",
    "back_pain",
    "cough",
    "nausea_vomiting",
    "fever_chills",
    "syncope",
    "dizziness",
)
CCI = (
    "MI",
    "CHF",
    "PVD",
    "Stroke",
    "Dementia",
    "Pulmonary",
    "Rheumatic",
    "PUD",
    "Liver1",
    "DM1",
    "DM2",
    "Paralysis",
    "Renal",
    "Cancer1",
    "Liver2",
    "Cancer2",
    "HIV",
)
ECI = (
    "Arrhythmia",
    "Valvular",
    "PHTN",
    "HTN1",
    "HTN2",
    "NeuroOther",
    "Hypothyroid",
    "Lymphoma",
    "Coagulopathy",
    "Obesity",
    "WeightLoss",
    "FluidsLytes",
    "BloodLoss",
    "Anemia",
    "Alcohol",
    "Drugs",
    "Psychoses",
    "Depression",
)
UTILISATION = tuple(f"n_{kind}_{days}d" for kind in ("ed", "hosp", "icu") for days in (30, 90, 365))
TRIAGE = (
    "triage_temperature",
    "triage_heartrate",
    "triage_resprate",
    "triage_o2sat",
    "triage_sbp",
    "triage_dbp",
    "triage_pain",
    "triage_acuity",
)
ED_FEATURES: tuple[str, ...] = (
    "age",
    "gender_binarized",
    *UTILISATION,
    *TRIAGE,
    *(f"chiefcom_{c}" for c in CHIEF_COMPLAINTS),
    *(f"cci_{c}" for c in CCI),
    *(f"eci_{c}" for c in ECI),
)
assert len(ED_FEATURES) == 64, len(ED_FEATURES)

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

_TRIAGE_UNITS = {
    "triage_temperature": "°C, converted from the CSV's °F: (F - 32) * 5 / 9",
    "triage_heartrate": "beats/min, as in the CSV",
    "triage_resprate": "breaths/min, as in the CSV",
    "triage_o2sat": "% SpO2, as in the CSV",
    "triage_sbp": "mmHg, as in the CSV",
    "triage_dbp": "mmHg, as in the CSV",
    "triage_pain": "0-10 scale, as in the CSV",
    "triage_acuity": "ESI level 1-5, as in the CSV",
}


def ed_feature_contract() -> list[tuple[str, str, str]]:
    """(name, unit / derivation, imputation) of each of the 64 inputs, in order (`medaudit datasets --features`)."""
    out = [("age", "years, as in the CSV (records under 18 are quarantined)", "none")]
    out.append(("gender_binarized", "1.0 if gender == 'F' else 0.0", "none"))
    out += [(u, "count of prior visits in the window, as in the CSV", "none") for u in UTILISATION]
    mean = "empty -> training-split mean (80/20 split over patients, seed 10)"
    out += [(t, _TRIAGE_UNITS[t], mean) for t in TRIAGE]
    out += [(f, "0/1 indicator, as in the CSV", "none") for f in ED_FEATURES[len(out) :]]
    assert [n for n, _, _ in out] == list(ED_FEATURES)
    return out

"""Three synthetic datasets in the layouts of the example specs docs/examples/own_data/*.yaml, written
as a team would export them, each with a few planted faults (docs/OWN_DATA.md, tests/datasets/test_spec_*.py,
tests/e2e/test_spec_end_to_end.py).

* ``write_clinic_visits``: visits.csv + patients.csv (tabular, categorical and missing values, joined on mrn);
* ``write_derm_images``: manifest.csv + images/<patient>_<k>.png (multiclass images, several per patient);
* ``write_ward_ecg``: ecg_index.parquet + signals/<ecg_id>.npy (multilabel two-lead signals).

Raw identifiers have a recognisable shape (MRN-#####, V#######, P#####, E######, S-####, SN-######);
each writer returns them (``ids``) so a test can look for every one in everything medaudit writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "own_data"


def write_clinic_visits(raw: Path, n_patients: int = 120, seed: int = 0) -> dict:
    """visits.csv (one row per visit) + patients.csv (one row per MRN). Faults: a non-numeric age,
    a repeated visit id, a visit of an MRN not in patients.csv, an unknown outcome, a minor, a visit
    from the excluded site, and a patient row repeated in patients.csv."""
    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    mrns = [f"MRN-{10000 + i}" for i in range(n_patients)]
    patients = pd.DataFrame(
        {
            "mrn": mrns,
            "sex": rng.choice(["F", "M"], n_patients),
            "ethnicity": rng.choice(["WHITE", "BLACK/AFRICAN", "ASIAN - CHINESE", "HISPANIC", "", "OTHER"], n_patients),
            "birth_year": rng.integers(1930, 2000, n_patients),
        }
    )
    rows = []
    k = 0
    for mrn in mrns:
        base_age = float(rng.uniform(20, 90))
        for _ in range(int(rng.integers(1, 4))):
            k += 1
            age = base_age + float(rng.uniform(0, 2))
            risk = -3 + 0.04 * age + rng.normal(0, 1)
            rows.append(
                {
                    "visit_id": f"V{1000000 + k}",
                    "mrn": mrn,
                    "site": "main",
                    "age": f"{age:.1f}",
                    "sbp": "" if rng.random() < 0.15 else f"{rng.normal(130, 20):.0f}",
                    "bmi": "" if rng.random() < 0.2 else f"{rng.normal(27, 5):.1f}",
                    "hba1c": "" if rng.random() < 0.3 else f"{rng.normal(5.8, 0.8):.1f}",
                    "smoking": rng.choice(["never", "former", "current", ""]),
                    "note": f"seen by dr {rng.integers(1, 9)} for {mrn}",
                    "admitted_30d": "yes" if risk > 0 else "no",
                }
            )
    visits = pd.DataFrame(rows)
    faults = {
        "age": dict(visits.iloc[0], visit_id="V0999991", age="forty"),
        "dup": dict(visits.iloc[1]),
        "orphan": dict(visits.iloc[2], visit_id="V0999992", mrn="MRN-99999"),
        "label": dict(visits.iloc[3], visit_id="V0999993", admitted_30d="maybe"),
        "minor": dict(visits.iloc[4], visit_id="V0999994", age="12"),
        "site": dict(visits.iloc[5], visit_id="V0999995", site="training-site"),
    }
    visits = pd.concat([visits, pd.DataFrame(list(faults.values()))], ignore_index=True)
    patients = pd.concat([patients, patients.iloc[[7]]], ignore_index=True)  # a repeated MRN row
    visits.to_csv(raw / "visits.csv", index=False)
    patients.to_csv(raw / "patients.csv", index=False)
    ids = set(visits["visit_id"]) | set(visits["mrn"]) | set(patients["mrn"])
    return {"raw": raw, "ids": ids, "n_rows": len(visits) + 1}  # + the repeated patients.csv row (quarantined)


def write_derm_images(raw: Path, n_patients: int = 40, seed: int = 0) -> dict:
    """manifest.csv + images/<patient>_<k>.png (16x16 RGB; lesion class sets the colour). Faults: a
    missing image, a corrupt image, a path climbing out of images/, a bad patient id, an unknown
    lesion, a test image of a training patient."""
    rng = np.random.default_rng(seed)
    (raw / "images").mkdir(parents=True, exist_ok=True)
    lesions = ["nevus", "melanoma", "eczema", "bcc", "seborrheic keratosis"]
    colour = {
        "nevus": (120, 80, 60),
        "seborrheic keratosis": (140, 100, 60),
        "melanoma": (40, 20, 20),
        "bcc": (60, 30, 40),
        "eczema": (200, 90, 90),
    }
    rows = []
    for i in range(n_patients):
        pid = f"P{20000 + i}"
        part = "test" if i % 4 == 0 else "train"
        for k in range(int(rng.integers(1, 3))):
            lesion = str(rng.choice(lesions))
            name = f"{pid}_{k}.png"
            arr = np.clip(np.array(colour[lesion]) + rng.normal(0, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(raw / "images" / name)
            rows.append(
                {
                    "image_file": name,
                    "patient": pid,
                    "lesion": lesion,
                    "fitzpatrick": str(rng.integers(1, 7)) if rng.random() > 0.1 else "",
                    "body_site": str(rng.choice(["face", "trunk", "limb", "scalp"])),
                    "partition": part,
                }
            )
    m = pd.DataFrame(rows)
    train_row = next(r for r in rows if r["partition"] == "train")
    extra = [
        {**rows[0], "image_file": "P29990_0.png", "patient": "P29990"},  # listed, never written
        {**rows[0], "image_file": "P29991_0.png", "patient": "P29991"},  # corrupt file
        {**rows[0], "image_file": "../P29992_0.png", "patient": "P29992"},  # outside images/
        {**rows[0], "image_file": "Q77777_0.png", "patient": "Q77777"},  # patient id pattern
        {**rows[0], "image_file": "P29993_0.png", "patient": "P29993", "lesion": "wart"},
        {**train_row, "image_file": train_row["patient"] + "_9.png", "partition": "test"},  # training patient in test
    ]
    (raw / "images" / "P29991_0.png").write_bytes(b"not a png")
    shutil.copy(raw / "images" / train_row["image_file"], raw / "images" / (train_row["patient"] + "_9.png"))
    m = pd.concat([m, pd.DataFrame(extra)], ignore_index=True)
    m.to_csv(raw / "manifest.csv", index=False)
    ids = set(m["patient"]) | set(m["image_file"]) | {f.removesuffix(".png") for f in m["image_file"]}
    return {"raw": raw, "ids": ids, "n_rows": len(m)}


def write_ward_ecg(raw: Path, n_patients: int = 40, seed: int = 0) -> dict:
    """ecg_index.parquet + signals/<ecg_id>.npy, float32 (2, 128). Faults: a missing file, a file of
    the wrong shape, a file with NaN samples, a label value 2."""
    rng = np.random.default_rng(seed)
    (raw / "signals").mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    t = np.linspace(0, 4 * np.pi, 128)
    for i in range(n_patients):
        for _ in range(int(rng.integers(1, 3))):
            k += 1
            eid = f"E{300000 + k}"
            af, lvh = int(rng.random() < 0.3), int(rng.random() < 0.2)
            sig = np.stack([np.sin(t * (1.5 if af else 1.0)), (1 + lvh) * np.cos(t)]) + rng.normal(0, 0.2, (2, 128))
            np.save(raw / "signals" / f"{eid}.npy", sig.astype(np.float32))
            rows.append(
                {
                    "ecg_id": eid,
                    "subject": f"S-{5000 + i}",
                    "device_serial": f"SN-{700000 + k}",
                    "age": float(rng.uniform(30, 90)),
                    "sex": str(rng.choice(["female", "male"])),
                    "af": af,
                    "lvh": lvh,
                }
            )
    extra = [
        {**rows[0], "ecg_id": "E399991"},  # missing file
        {**rows[0], "ecg_id": "E399992"},  # wrong shape
        {**rows[0], "ecg_id": "E399993"},  # NaN samples
        {**rows[0], "ecg_id": "E399994", "af": 2},
    ]
    np.save(raw / "signals" / "E399992.npy", np.zeros((128, 2), dtype=np.float32))
    np.save(raw / "signals" / "E399993.npy", np.full((2, 128), np.nan, dtype=np.float32))
    np.save(raw / "signals" / "E399994.npy", np.zeros((2, 128), dtype=np.float32))
    idx = pd.DataFrame(rows + extra)
    idx.to_parquet(raw / "ecg_index.parquet", index=False)
    ids = set(idx["ecg_id"]) | set(idx["subject"]) | set(idx["device_serial"])
    return {"raw": raw, "ids": ids, "n_rows": len(idx)}

"""A synthetic chest X-ray cohort in the MIMIC-CXR-JPG 2.0.0 layout, with MIMIC-IV admissions.csv and
patients.csv copied next to its tables (as the paper's notebook expects).

Writes, under ``raw_dir``: ``mimic-cxr-2.0.0-{metadata,negbio,chexpert,split}.csv``, ``admissions.csv``,
``patients.csv`` and ``files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg``. Deterministic from a seed.

Subjects have one to several studies of one to three images (PA + LATERAL, portable AP, sometimes LL
or a rarer position); labels are per study from two labelers (NegBio, and the CheXpert labeler, which
calls a few more findings uncertain); the official split is per subject (train / validate / test).
patients.csv also lists MIMIC-IV subjects without X-rays; admissions.csv has one to three admissions
per subject with MIMIC-IV race strings. Images come from the CheXpert writer's painter (content
depends on the NegBio labels; uncertain findings drawn fainter).

With ``awkward=True`` (default) the cohort also contains:

* ``multi_race`` (2 subjects): admissions recording two different races -> Other/Unknown;
* ``no_admissions``: a subject without admissions (race Other/Unknown); ``no_patient_row``: a subject
  missing from patients.csv (sex and age band Unknown);
* ``unlabelled_study``: a study without a row in the label tables (all-zero labels, kept);
* ``not_in_split``: an image missing from the split table (cohort quarantine);
* ``damaged_row``: a metadata row whose study_id is written 's5...' (contract quarantine);
* ``truncated_jpeg``, ``text_as_jpeg``, ``missing_image``: one image each that cannot be decoded.

Whatever ``awkward`` is, a share ``atypical`` (default 3%) of the other images are
``atypical_presentation`` (stage empty: accepted): drawn with the findings of an unrelated study.

Ground truth for tests is in ``_synthetic_truth.csv`` (source_file, source_row, plant, stage; stage is
empty for a row the adapter should accept), which the adapter ignores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.datasets.chexpert import CXR_LABELS
from tasks.synthetic import register_synthetic
from tasks.synthetic.chexpert import (
    CXRPainter,
    sample_study_labels,
    save_jpeg,
    strengths_of,
    write_broken_image,
)
from tasks.synthetic.cohort import ATYPICAL_SHARE, TRUTH_FILE, assign_plants, mark_atypical, start_cohort

LABEL_ORDER = sorted(CXR_LABELS)  # the label tables list findings alphabetically
_RACES = (
    ("WHITE", 0.5),
    ("BLACK/AFRICAN AMERICAN", 0.17),
    ("HISPANIC/LATINO - PUERTO RICAN", 0.05),
    ("OTHER", 0.05),
    ("UNKNOWN", 0.06),
    ("ASIAN - CHINESE", 0.03),
    ("ASIAN", 0.02),
    ("WHITE - OTHER EUROPEAN", 0.04),
    ("UNABLE TO OBTAIN", 0.02),
    ("BLACK/CAPE VERDEAN", 0.02),
    ("PATIENT DECLINED TO ANSWER", 0.02),
    ("WHITE - RUSSIAN", 0.02),
)
# (ViewPosition, ViewCodeSequence_CodeMeaning, PatientOrientationCodeSequence_CodeMeaning)
_VIEW_META = {
    "PA": ("postero-anterior", "Erect"),
    "AP": ("antero-posterior", "Erect"),
    "LATERAL": ("lateral", "Erect"),
    "LL": ("left lateral", "Erect"),
    "AP AXIAL": ("antero-posterior", "Recumbent"),
    "": ("", ""),
}


def _dicom_id(rng: np.random.Generator) -> str:
    """A MIMIC-CXR style dicom_id: five dash-separated groups of 8 hex digits."""
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5))


def _study_views(rng: np.random.Generator) -> list[str]:
    u = rng.random()
    if u < 0.5:
        return ["PA", "LATERAL"]
    if u < 0.8:
        return ["AP"]
    if u < 0.88:
        return ["AP", "LATERAL"]
    if u < 0.94:
        return ["PA", "LL"]
    return ["PA"] if u < 0.97 else ["AP AXIAL" if u < 0.985 else ""]


def _cells_to_text(cells: dict[str, float]) -> dict[str, object]:
    return {k: ("" if np.isnan(cells[k]) else cells[k]) for k in LABEL_ORDER}


@register_synthetic("mimic-cxr")
def write_mimic_cxr(raw_dir: Path, n_patients: int = 200, seed: int = 0, awkward: bool = True, atypical: float = ATYPICAL_SHARE) -> Path:
    """Write a MIMIC-CXR-JPG-layout cohort of ``n_patients`` subjects into ``raw_dir``; returns it."""
    raw_dir, rng = start_cohort(raw_dir, n_patients, seed, 20)
    painter = CXRPainter()

    # choice(int, replace=False) draws without materialising the 10^7 candidates.
    subjects = np.sort(10_000_000 + rng.choice(10_000_000, size=n_patients, replace=False))
    official = rng.choice(["train", "validate", "test"], size=n_patients, p=[0.8, 0.05, 0.15])
    gender = rng.choice(["F", "M"], size=n_patients)
    anchor_age = np.clip(rng.normal(62, 17, size=n_patients), 18, 91).round().astype(int)
    race_names = [r for r, _ in _RACES]
    race_p = np.array([p for _, p in _RACES])
    race = rng.choice(race_names, size=n_patients, p=race_p / race_p.sum())
    study_pool = iter(50_000_000 + rng.choice(10_000_000, size=8 * n_patients, replace=False))

    meta: list[dict[str, object]] = []
    negbio: list[dict[str, object]] = []
    chexpert: list[dict[str, object]] = []
    pixels: list[np.ndarray] = []
    styles: list[tuple[np.ndarray, tuple[int, int]]] = []
    for s, subject in enumerate(subjects):
        style = painter.patient_style(rng)
        styles.append(style)
        for _ in range(1 + min(int(rng.poisson(1.5)), 6)):
            study = int(next(study_pool))
            cells = sample_study_labels(rng)
            negbio.append({"subject_id": subject, "study_id": study, **_cells_to_text(cells)})
            other = dict(cells)
            mentioned = [k for k, v in cells.items() if v == 1.0 and k != "No Finding"]
            if mentioned and rng.random() < 0.3:  # the CheXpert labeler hedges a few more findings
                other[str(rng.choice(mentioned))] = -1.0
            chexpert.append({"subject_id": subject, "study_id": study, **_cells_to_text(other)})
            date = 21000000 + int(rng.integers(0, 90)) * 10000 + int(rng.integers(1, 13)) * 100 + int(rng.integers(1, 29))
            for view in _study_views(rng):
                code, orientation = _VIEW_META[view]
                lateral = view in ("LATERAL", "LL")
                meta.append(
                    {
                        "dicom_id": _dicom_id(rng),
                        "subject_id": subject,
                        "study_id": study,
                        "PerformedProcedureStepDescription": "CHEST (PORTABLE AP)" if view.startswith("AP") else "CHEST (PA AND LAT)",
                        "ViewPosition": view,
                        "Rows": 3056 if lateral else 2544,
                        "Columns": 2544 if lateral else 3056,
                        "StudyDate": date,
                        "StudyTime": round(float(rng.uniform(0, 235959)), 3),
                        "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)" if not view.startswith("AP") else "CHEST (PORTABLE AP)",
                        "ViewCodeSequence_CodeMeaning": code,
                        "PatientOrientationCodeSequence_CodeMeaning": orientation,
                        "_subject": s,
                    }
                )
                pixels.append(painter.draw(strengths_of(cells), lateral, style, rng))
    md = pd.DataFrame(meta)
    md["plant"], md["stage"] = "", ""
    labels_nb, labels_cx = pd.DataFrame(negbio), pd.DataFrame(chexpert)
    no_adm: set[int] = set()
    no_patient: set[int] = set()
    multi_race: set[int] = set()

    if awkward:
        s_pick = [int(x) for x in rng.permutation(np.flatnonzero(official == "train"))[:4]]
        multi_race, no_adm, no_patient = set(s_pick[:2]), {s_pick[2]}, {s_pick[3]}
        for plant, group in (
            ("multi_race", multi_race),
            ("no_admissions", no_adm),
            ("no_patient_row", no_patient),
        ):
            md.loc[md["_subject"].isin(group), "plant"] = plant
        free = rng.permutation(np.flatnonzero((md["plant"] == "") & (official[md["_subject"]] != "test")))
        assign_plants(
            md,
            free,
            (
                ("unlabelled_study", ""),
                ("not_in_split", "cohort"),
                ("damaged_row", "contract"),
                ("truncated_jpeg", "decode"),
                ("text_as_jpeg", "decode"),
                ("missing_image", "decode"),
            ),
        )
        # The unlabelled study: every image of that study is kept with all-zero labels.
        study = md.loc[md["plant"] == "unlabelled_study", "study_id"].iloc[0]
        same_study = (md["study_id"] == study) & (md["plant"] == "")
        md.loc[same_study, "plant"] = "unlabelled_study"
        labels_nb = labels_nb[labels_nb["study_id"] != study]
        labels_cx = labels_cx[labels_cx["study_id"] != study]
    plant = md["plant"].to_numpy(dtype=object, copy=True)
    rows_atypical, arng = mark_atypical(plant, seed, atypical)
    md["plant"] = plant
    lateral = md["ViewPosition"].isin(["LATERAL", "LL"]).to_numpy()
    painter.repaint_atypical(pixels, rows_atypical, lateral, [styles[s] for s in md["_subject"]], arng)

    for i, row in md.iterrows():
        sid = str(row["subject_id"])
        path = raw_dir / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{row['study_id']}" / f"{row['dicom_id']}.jpg"
        if row["plant"] in ("truncated_jpeg", "text_as_jpeg", "missing_image"):
            write_broken_image(path, str(row["plant"]), pixels[i])
        else:
            save_jpeg(path, pixels[i])

    split = pd.DataFrame(
        {
            "dicom_id": md["dicom_id"],
            "study_id": md["study_id"],
            "subject_id": md["subject_id"],
            "split": official[md["_subject"]],
        }
    )
    split = split[md["plant"] != "not_in_split"]
    meta_out = md.drop(columns=["_subject", "plant", "stage"]).astype({"study_id": object})
    damaged = md["plant"] == "damaged_row"
    meta_out.loc[damaged, "study_id"] = "s" + meta_out.loc[damaged, "study_id"].astype(str)
    meta_out.to_csv(raw_dir / "mimic-cxr-2.0.0-metadata.csv", index=False)
    split.to_csv(raw_dir / "mimic-cxr-2.0.0-split.csv", index=False)
    labels_nb.to_csv(raw_dir / "mimic-cxr-2.0.0-negbio.csv", index=False)
    labels_cx.to_csv(raw_dir / "mimic-cxr-2.0.0-chexpert.csv", index=False)

    # MIMIC-IV: patients (plus subjects who never had an X-ray) and admissions.
    extra = np.setdiff1d(10_000_000 + rng.choice(10_000_000, size=n_patients // 2, replace=False), subjects)[: n_patients // 4]
    keep = [s for s in range(n_patients) if s not in no_patient]
    n_extra = len(extra)
    pd.DataFrame(
        {
            "subject_id": np.concatenate([subjects[keep], extra]),
            "gender": np.concatenate([gender[keep], rng.choice(["F", "M"], size=n_extra)]),
            "anchor_age": np.concatenate([anchor_age[keep], rng.integers(18, 92, size=n_extra)]),
            "anchor_year": rng.integers(2110, 2200, size=len(keep) + n_extra),
            "anchor_year_group": rng.choice(["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019"], size=len(keep) + n_extra),
            "dod": "",
        }
    ).sort_values("subject_id").to_csv(raw_dir / "patients.csv", index=False)

    adm_rows: list[dict[str, object]] = []
    hadm = iter(20_000_000 + rng.choice(10_000_000, size=4 * n_patients, replace=False))
    for s, subject in enumerate(subjects):
        if s in no_adm:
            continue
        n_adm = 2 if s in multi_race else 1 + int(rng.integers(0, 3))
        for k in range(n_adm):
            recorded = race[s]
            if s in multi_race and k == 1:
                recorded = "BLACK/AFRICAN AMERICAN" if race[s] != "BLACK/AFRICAN AMERICAN" else "WHITE"
            admit = pd.Timestamp("2110-01-01") + pd.Timedelta(days=int(rng.integers(0, 30000)))
            adm_rows.append(
                {
                    "subject_id": subject,
                    "hadm_id": int(next(hadm)),
                    "admittime": admit,
                    "dischtime": admit + pd.Timedelta(hours=int(rng.integers(6, 300))),
                    "deathtime": "",
                    "admission_type": rng.choice(["EW EMER.", "URGENT", "ELECTIVE", "OBSERVATION ADMIT"]),
                    "admit_provider_id": f"P{int(rng.integers(10000, 99999))}",
                    "admission_location": rng.choice(["EMERGENCY ROOM", "PHYSICIAN REFERRAL", "TRANSFER FROM HOSPITAL"]),
                    "discharge_location": rng.choice(["HOME", "SKILLED NURSING FACILITY", "HOME HEALTH CARE", ""]),
                    "insurance": rng.choice(["Medicare", "Medicaid", "Other"]),
                    "language": "ENGLISH",
                    "marital_status": rng.choice(["MARRIED", "SINGLE", "WIDOWED", ""]),
                    "race": recorded,
                    "edregtime": "",
                    "edouttime": "",
                    "hospital_expire_flag": 0,
                }
            )
    pd.DataFrame(adm_rows).to_csv(raw_dir / "admissions.csv", index=False)

    truth = pd.DataFrame(
        {
            "source_file": "mimic-cxr-2.0.0-metadata.csv",
            "source_row": np.arange(len(md)) + 2,
            "plant": md["plant"],
            "stage": md["stage"],
        }
    )
    truth[truth["plant"] != ""].to_csv(raw_dir / TRUTH_FILE, index=False)
    return raw_dir

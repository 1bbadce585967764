"""A synthetic EMBED Open Data release: the two reduced tables and the PNG-converted mammograms.

Writes, under ``raw_dir``::

    EMBED_OpenData_clinical_reduced.csv    one row per exam finding (empi_anon, acc_anon, desc, ...)
    EMBED_OpenData_metadata_reduced.csv    one row per image (empi_anon, acc_anon, anon_dicom_path, ...)
    png/<empi_anon>/<basename(anon_dicom_path) .dcm -> .png>   8-bit grayscale, 128 (H) x 96 (W)

Deterministic from a seed. Patients have one to three exams (screening or diagnostic), each with the
four standard views (L/R x CC/MLO) and one or two clinical findings (the second is the join duplicate
the paper's drop of duplicate ``anon_dicom_path`` removes). Each mammogram is a breast silhouette whose
fibroglandular texture covers a fraction of the breast that grows with the BI-RADS density (A fatty ...
D extremely dense); MLO views show the pectoral muscle. Race uses EMBED's raw strings (including the
double space of "African American  or Black").

With ``awkward=True`` the cases of the real tables are planted, disjointly, so every metadata row has a
known fate (``_synthetic_truth.csv``; the adapter ignores it):

* ``diagnostic`` exams (about 20%, never a patient's first exam) -> cohort (screening filter);
* ``no_clinical`` (1 exam): images whose exam has no clinical row -> cohort (join);
* ``duplicate_path`` (2 rows): an image listed again -> dedupe;
* ``missing_race`` (1 patient): empty RACE_DESC -> cohort;
* ``other_view`` (3 rows): extra XCCL / ML / empty-view images -> cohort;
* ``male`` (1 patient): GENDER_DESC Male with tissueden 5, as EMBED codes men -> cohort;
* ``density5`` (1 exam of a woman): tissueden 5 -> cohort;
* ``no_density`` (1 exam): empty tissueden -> cohort;
* ``no_path`` (1 row): empty anon_dicom_path -> contract;
* ``bad_finding`` (1 clinical row, the second finding of an exam): tissueden 7 -> contract, in the
  clinical file (its exam still joins through its first finding);
* ``missing_png``, ``truncated_png``, ``png16``, ``text_as_png`` (1 image each) -> decode.

Whatever ``awkward`` is, a share ``atypical`` (default 3%) of the other images are
``atypical_presentation``: the mammogram shows another density than its exam's label (accepted; a model
gets them right only by memorising them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tasks.synthetic import register_synthetic
from tasks.synthetic.cohort import ATYPICAL, ATYPICAL_SHARE, TRUTH_FILE, another, mark_atypical, start_cohort, truncate_file

CLINICAL = "EMBED_OpenData_clinical_reduced.csv"
METADATA = "EMBED_OpenData_metadata_reduced.csv"
# variant -> (folder of the two tables, folder of the PNGs)
VARIANTS = {"flat": (".", "png"), "released": ("tables", "png/1024x768")}
H, W = 128, 96
_YY, _XX = np.mgrid[0:H, 0:W].astype(np.float32)
RACES = (
    ("African American  or Black", 0.42),
    ("Caucasian or White", 0.41),
    ("Asian", 0.06),
    ("Unknown, Unavailable or Unreported", 0.03),
    ("Multiple", 0.02),
    ("Not Recorded", 0.02),
    ("Native Hawaiian or Other Pacific Islander", 0.015),
    ("American Indian or Alaskan Native", 0.01),
    ("Patient Declines", 0.005),
)
_SCREEN_DESC = ("MG Screening Bilateral w/ CAD", "MG Screen Bilat w/Tomo", "MG SCREENING BILATERAL")
_DIAG_DESC = ("MG Diagnostic Left w/ CAD", "MG Diag Bilateral w/Tomo", "MG Diagnostic Right")
_DENSITY_P = (0.12, 0.43, 0.40, 0.05)
_FRACTION = {1: 0.08, 2: 0.3, 3: 0.55, 4: 0.8, 5: 0.05}  # fibroglandular share of the breast per tissueden
_FATE = {
    "diagnostic": "cohort",
    "no_clinical": "cohort",
    "duplicate_path": "dedupe",
    "missing_race": "cohort",
    "other_view": "cohort",
    "male": "cohort",
    "density5": "cohort",
    "no_density": "cohort",
    "no_path": "contract",
    "bad_finding": "contract",
    "missing_png": "decode",
    "truncated_png": "decode",
    "png16": "decode",
    "text_as_png": "decode",
}


def _mammogram(rng: np.random.Generator, density: int, laterality: str, view: str) -> np.ndarray:
    """uint8 (H, W) mammogram-like image: breast on the chest-wall side, texture density by BI-RADS."""
    yy, xx = _YY, _XX
    depth = rng.uniform(0.75, 0.95) * W * (0.6 if density == 5 else 1.0)
    half_h = rng.uniform(0.38, 0.46) * H
    cy = H / 2 + rng.uniform(-5, 5)
    x_from_wall = xx if laterality == "R" else (W - 1 - xx)
    breast = (x_from_wall / depth) ** 2 + ((yy - cy) / half_h) ** 2 <= 1.0
    coarse = rng.random((8, 6)).astype(np.float32)
    blob = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((W, H), Image.Resampling.BICUBIC), np.float32)
    blob = blob + rng.normal(0, 18, size=(H, W)).astype(np.float32)
    inside = blob[breast]
    cut = np.quantile(inside, 1 - _FRACTION[density]) if inside.size else 0.0
    dense = breast & (blob >= cut)
    img = np.zeros((H, W), np.float32)
    img[breast] = 75 + rng.normal(0, 6, size=int(breast.sum()))
    img[dense] = 190 + rng.normal(0, 12, size=int(dense.sum()))
    if view == "MLO":  # pectoral muscle: a bright triangle at the top of the chest wall
        muscle = breast & (x_from_wall < (0.45 * W) * (1 - yy / (0.55 * H)))
        img[muscle] = 165 + rng.normal(0, 5, size=int(muscle.sum()))
    return np.clip(img, 0, 255).astype(np.uint8)


@register_synthetic("embed")
def write_embed(
    raw_dir: Path,
    n_patients: int = 200,
    seed: int = 0,
    awkward: bool = True,
    atypical: float = ATYPICAL_SHARE,
    variant: str = "flat",
) -> Path:
    """Write the EMBED tables and PNGs for ``n_patients`` patients into ``raw_dir``; returns the metadata
    CSV path. ``_synthetic_truth.csv`` lists every metadata row (and the clinical contract failure) with
    source_file, source_row, empi_anon, acc_anon, density, plant and expected fate.

    ``variant``: ``flat`` (the tables at the top level, PNGs under ``png/``) or ``released`` (the tables
    under ``tables/``, PNGs under ``png/1024x768/``, as EMBED is released).
    """
    if variant not in VARIANTS:
        raise ValueError(f"EMBED variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    raw_dir, rng = start_cohort(raw_dir, n_patients, seed, 20 if awkward else 1)

    empi = 10_000_000 + rng.choice(90_000_000, size=n_patients, replace=False)  # no 90M-element array
    race_names = np.array([r for r, _ in RACES], dtype=object)
    race_p = np.array([p for _, p in RACES])
    race = rng.choice(race_names, size=n_patients, p=race_p / race_p.sum())
    density = rng.choice([1, 2, 3, 4], size=n_patients, p=_DENSITY_P)
    age0 = rng.uniform(40, 78, size=n_patients)
    n_exams = 1 + rng.binomial(2, 0.35, size=n_patients)
    gender = np.full(n_patients, "Female", dtype=object)

    patient_plant = np.full(n_patients, "", dtype=object)
    if awkward:
        picks = rng.choice(n_patients, size=2, replace=False)
        patient_plant[picks] = ["missing_race", "male"]
        race[picks[0]] = None
        gender[picks[1]] = "Male"

    exams = []  # one dict per exam
    for p in range(n_patients):
        for k in range(int(n_exams[p])):
            screening = k == 0 or not awkward or rng.random() > 0.3
            den = 5 if patient_plant[p] == "male" else int(np.clip(density[p] + (rng.random() < 0.1) * rng.choice([-1, 1]), 1, 4))
            exams.append(
                {
                    "p": p,
                    "acc": 0,
                    "screening": screening,
                    "tissueden": den,
                    "age": round(float(age0[p] + 1.1 * k), 1),
                    "findings": 2 if rng.random() < 0.2 else 1,
                    "plant": "" if screening else "diagnostic",
                }
            )
    accs = 1_000_000_000_000 + rng.choice(9_000_000_000_000, size=len(exams), replace=False)
    for e, a in zip(exams, accs, strict=True):
        e["acc"] = int(a)
    if awkward:
        clean = [i for i, e in enumerate(exams) if e["plant"] == "" and patient_plant[e["p"]] == ""]
        for i, name in zip(rng.choice(clean, size=3, replace=False), ("no_clinical", "density5", "no_density"), strict=True):
            exams[i]["plant"] = name
        exams[next(i for i in clean if exams[i]["plant"] == "")]["findings"] = 2  # gets the bad_finding row

    # ---- clinical table: one row per finding, exam blocks shuffled (the file is not sorted by patient)
    clin_rows = []
    bad_finding_done = not awkward
    for i in rng.permutation(len(exams)):
        e = exams[i]
        p = e["p"]
        if e["plant"] == "no_clinical":
            continue
        for f in range(e["findings"]):
            den: object = e["tissueden"]
            if e["plant"] == "density5":
                den = 5
            elif e["plant"] == "no_density":
                den = None
            plant = ""
            if f == 1 and not bad_finding_done and e["plant"] == "" and patient_plant[p] == "":
                den, plant, bad_finding_done = 7, "bad_finding", True
            asses = rng.choice(["N", "B", "A"], p=[0.6, 0.25, 0.15]) if e["screening"] else rng.choice(["B", "P", "S", "M", "K", "X", "N"])
            clin_rows.append(
                {
                    "empi_anon": int(empi[p]),
                    "acc_anon": e["acc"],
                    "study_date_anon": f"20{10 + int(e['age']) % 10}-0{1 + f}-15",
                    "desc": rng.choice(_SCREEN_DESC if e["screening"] else _DIAG_DESC),
                    "numfind": e["findings"],
                    "side": rng.choice(["L", "R", "B"]),
                    "asses": asses,
                    "tissueden": den,
                    "ETHNICITY_DESC": rng.choice(["Not Hispanic or Latino", "Hispanic or Latino", "Unknown"], p=[0.9, 0.05, 0.05]),
                    "ETHNIC_GROUP_DESC": "",
                    "RACE_DESC": race[p],
                    "GENDER_DESC": gender[p],
                    "age_at_study": e["age"],
                    "MARITAL_STATUS_DESC": rng.choice(["Married", "Single", "Widowed"]),
                    "plant_": plant,
                }
            )
    clinical = pd.DataFrame(clin_rows)

    # ---- metadata table: four standard views per exam, in patient/exam order
    meta_rows = []
    for e in exams:
        p = e["p"]
        base = f"/mnt/NAS2/mammo/anon_dicom/cohort_{1 + p % 2}/{empi[p]}/{e['acc']}"
        for lat in ("L", "R"):
            for view in ("CC", "MLO"):
                uid = "".join(rng.choice(list("0123456789"), size=20))
                plant = e["plant"] or patient_plant[p]
                meta_rows.append(
                    {
                        "empi_anon": int(empi[p]),
                        "acc_anon": e["acc"],
                        "anon_dicom_path": f"{base}/1.2.826.0.1.3680043.8.498.{uid}.dcm",
                        "ImageLaterality": lat,
                        "ViewPosition": view,
                        "PatientSex": "M" if gender[p] == "Male" else "F",
                        "FinalImageType": rng.choice(["2D", "cview"], p=[0.8, 0.2]),
                        "Manufacturer": "HOLOGIC, Inc.",
                        "plant_": plant,
                        "density_": e["tissueden"],
                    }
                )
    meta = pd.DataFrame(meta_rows)
    if awkward:
        clean_rows = np.flatnonzero((meta["plant_"] == "").to_numpy())
        picks = rng.choice(clean_rows, size=6, replace=False)
        for j, name in zip(picks[:4], ("missing_png", "truncated_png", "png16", "text_as_png"), strict=True):
            meta.at[j, "plant_"] = name
        extra = []
        for j, view in zip(rng.choice(clean_rows, size=3, replace=False), ("XCCL", "ML", None), strict=True):
            uid = "".join(rng.choice(list("0123456789"), size=20))
            path = meta.at[j, "anon_dicom_path"].rsplit("/", 1)[0] + f"/1.2.826.0.1.3680043.8.498.{uid}.dcm"
            extra.append(
                (
                    j,
                    meta.loc[j].to_dict() | {"anon_dicom_path": path, "ViewPosition": view, "plant_": "other_view"},
                )
            )
        for j in picks[4:]:  # the same image listed again, further down
            extra.append((int(rng.integers(j, len(meta))), meta.loc[j].to_dict() | {"plant_": "duplicate_path"}))
        j = int(rng.choice(clean_rows))
        extra.append((j, meta.loc[j].to_dict() | {"anon_dicom_path": None, "plant_": "no_path"}))
        for at, row in sorted(extra, key=lambda t: t[0], reverse=True):
            meta = pd.concat([meta.iloc[: at + 1], pd.DataFrame([row]), meta.iloc[at + 1 :]], ignore_index=True)

    plant = meta["plant_"].to_numpy(dtype=object, copy=True)
    _, arng = mark_atypical(plant, seed, atypical)
    meta["plant_"] = plant

    # ---- images
    tables_dir, png_sub = VARIANTS[variant]
    png_root = raw_dir / png_sub
    for row in meta.itertuples(index=False):
        if row.anon_dicom_path is None or pd.isna(row.anon_dicom_path) or row.plant_ in ("missing_png", "duplicate_path"):
            continue
        folder = png_root / str(row.empi_anon)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (row.anon_dicom_path.rsplit("/", 1)[1][:-4] + ".png")
        if row.plant_ == "text_as_png":
            path.write_text("DICOM conversion failed: missing VOI LUT\n")
            continue
        view = row.ViewPosition if row.ViewPosition in ("CC", "MLO") else "CC"
        arr = _mammogram(rng, int(row.density_), row.ImageLaterality, view)
        if row.plant_ == ATYPICAL:  # drawn as above first, so the writer's generator stays in step
            arr = _mammogram(arng, int(another(arng, ("1", "2", "3", "4"), str(int(row.density_)))), row.ImageLaterality, view)
        if row.plant_ == "png16":
            Image.fromarray(arr.astype(np.uint16) * 257).save(path)  # 16-bit grayscale PNG ('I;16')
        elif row.plant_ == "truncated_png":
            Image.fromarray(arr, "L").save(path)
            truncate_file(path, 3)
        else:
            Image.fromarray(arr, "L").save(path, compress_level=1)

    (raw_dir / tables_dir).mkdir(parents=True, exist_ok=True)
    meta.drop(columns=["plant_", "density_"]).to_csv(raw_dir / tables_dir / METADATA, index=False)
    clinical.drop(columns=["plant_"]).to_csv(raw_dir / tables_dir / CLINICAL, index=False)
    truth = pd.DataFrame(
        {
            "source_file": METADATA,
            "source_row": np.arange(len(meta)) + 2,
            "empi_anon": meta["empi_anon"],
            "acc_anon": meta["acc_anon"],
            "density": meta["density_"],
            "plant": meta["plant_"],
            "fate": meta["plant_"].map(lambda k: _FATE.get(k, "accepted")),
        }
    )
    bad = clinical.index[clinical["plant_"] == "bad_finding"]
    truth = pd.concat(
        [
            truth,
            pd.DataFrame(
                {
                    "source_file": CLINICAL,
                    "source_row": bad + 2,
                    "empi_anon": clinical.loc[bad, "empi_anon"],
                    "acc_anon": clinical.loc[bad, "acc_anon"],
                    "density": 7,
                    "plant": "bad_finding",
                    "fate": "contract",
                }
            ),
        ],
        ignore_index=True,
    )
    truth.to_csv(raw_dir / TRUTH_FILE, index=False)
    return raw_dir / tables_dir / METADATA

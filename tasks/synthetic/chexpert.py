"""A synthetic chest X-ray cohort in the CheXpert v1.0 release layout.

Writes, under ``raw_dir``: ``CHEXPERT_DEMO.csv``, ``CheXpert-v1.0/train.csv``, ``CheXpert-v1.0/valid.csv``
and the JPEG tree ``CheXpert-v1.0/{train,valid}/patient<5 digits>/study<n>/view<k>_{frontal,lateral}.jpg``.
Deterministic from a seed.

Patients have one to several studies, each a frontal view (AP or PA) and sometimes a lateral one.
Labels are per study (repeated on each view, as in the release): 1.0, 0.0, -1.0 (uncertain) or empty
(not mentioned) in train.csv; valid.csv has consensus labels (1.0/0.0 only) and is disjoint in
patients. Images are small grayscale JPEGs whose content depends on the labels, so a model can learn
them: every finding adds its own structure (a larger heart for Cardiomegaly, a bright basal band for
Pleural Effusion, a tube line for Support Devices, ...), uncertain findings at reduced intensity, and
how clearly a finding shows varies between images (a linear model reaches AUROC ~0.7-0.99 per
finding, not 1.0); each patient also has a faint personal texture and offset (what a model can
memorise).

With ``awkward=True`` (default) the cohort also contains (train.csv):

* ``sex_unknown``: one patient whose rows have Sex 'Unknown' (cohort quarantine);
* ``missing_demographics``: two patients without a CHEXPERT_DEMO.csv row (race Other/Unknown);
* ``damaged_row``: one row with an empty Age (contract quarantine);
* ``truncated_jpeg``, ``text_as_jpeg`` (a text file named .jpg), ``missing_image``: one image each that
  cannot be decoded.

Whatever ``awkward`` is, a share ``atypical`` (default 3%) of the other images are
``atypical_presentation`` (stage empty: accepted): the image shows the findings of an unrelated study
while the CSV keeps the row's own labels, so a model gets it right only by memorising it.

Ground truth for tests is in ``_synthetic_truth.csv`` (source_file, source_row, plant, stage; stage is
empty for a row the adapter should accept), which the adapter ignores. The image helpers here are
shared with the MIMIC-CXR writer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tasks.datasets.chexpert import CXR_LABELS
from tasks.synthetic import register_synthetic
from tasks.synthetic.cohort import (
    ATYPICAL_SHARE,
    TRUTH_FILE,
    assign_plants,
    mark_atypical,
    start_cohort,
    truncate_file,
    write_unreadable_file,
)

RELEASE = "CheXpert-v1.0"
VARIANTS = {"full": RELEASE, "small": RELEASE + "-small"}
IMAGE_SHAPE = (120, 100)  # (H, W): portrait and non-square, as radiographs are; the adapter resizes

# Approximate CheXpert prevalences (positive or uncertain) of the 13 findings after No Finding.
PREVALENCE = {
    "Enlarged Cardiomediastinum": 0.08,
    "Cardiomegaly": 0.15,
    "Lung Opacity": 0.45,
    "Lung Lesion": 0.05,
    "Edema": 0.25,
    "Consolidation": 0.1,
    "Pneumonia": 0.06,
    "Atelectasis": 0.2,
    "Pneumothorax": 0.1,
    "Pleural Effusion": 0.38,
    "Pleural Other": 0.03,
    "Fracture": 0.05,
    "Support Devices": 0.5,
}
# Share of mentioned findings the labeler calls uncertain (-1).
UNCERTAIN_SHARE = {"Atelectasis": 0.35, "Edema": 0.25, "Consolidation": 0.3, "Pneumonia": 0.45}
_RACES = (
    ("White", 0.35),
    ("White, non-Hispanic", 0.12),
    ("Other", 0.12),
    ("Asian", 0.08),
    ("Asian, non-Hispanic", 0.03),
    ("Black or African American", 0.05),
    ("Black, non-Hispanic", 0.02),
    ("Unknown", 0.08),
    ("Race and Ethnicity Unknown", 0.03),
    ("Native Hawaiian or Other Pacific Islander", 0.02),
    ("White, Hispanic", 0.04),
    ("Other, Hispanic", 0.04),
    ("Patient Refused", 0.01),
    ("American Indian or Alaska Native", 0.01),
)


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates in [0, 1] for an image of ``shape``."""
    h, w = shape
    return np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")


def _ellipse(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float, soft: float = 0.08) -> np.ndarray:
    """A soft-edged filled ellipse, 1 inside, 0 outside."""
    r = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
    return np.clip((1 + soft - r) / (2 * soft), 0, 1)


def _band(y: np.ndarray, x: np.ndarray, y0: float, x0: float, y1: float, x1: float, width: float) -> np.ndarray:
    """A soft line segment from (y0, x0) to (y1, x1)."""
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((y - y0) * dy + (x - x0) * dx) / (dy * dy + dx * dx), 0, 1)
    d = np.hypot(y - (y0 + t * dy), x - (x0 + t * dx))
    return np.exp(-0.5 * (d / width) ** 2)


def _templates(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Base anatomy ('frontal', 'lateral', 'lungs') and one additive pattern per finding, in grey levels."""
    y, x = _grid(shape)
    lungs = _ellipse(y, x, 0.45, 0.3, 0.3, 0.15) + _ellipse(y, x, 0.45, 0.7, 0.3, 0.15)
    heart = _ellipse(y, x, 0.62, 0.45, 0.14, 0.14)
    body = _ellipse(y, x, 0.5, 0.5, 0.48, 0.45)
    t = {
        "frontal": 25 + 95 * body - 55 * lungs + 60 * heart + 40 * _band(y, x, 0.1, 0.5, 0.95, 0.5, 0.03),
        "lateral": 25
        + 95 * _ellipse(y, x, 0.5, 0.5, 0.46, 0.38)
        - 45 * _ellipse(y, x, 0.45, 0.45, 0.3, 0.22)
        + 70 * _band(y, x, 0.1, 0.8, 0.95, 0.78, 0.04),
        "lungs": lungs,
        "Enlarged Cardiomediastinum": 55 * _ellipse(y, x, 0.35, 0.5, 0.2, 0.09),
        "Cardiomegaly": 70 * (_ellipse(y, x, 0.62, 0.45, 0.22, 0.24) - heart),
        "Lung Opacity": 45 * (_ellipse(y, x, 0.4, 0.25, 0.08, 0.06) + _ellipse(y, x, 0.55, 0.72, 0.09, 0.07)),
        "Lung Lesion": 90 * _ellipse(y, x, 0.3, 0.68, 0.035, 0.04),
        "Edema": 40 * (_ellipse(y, x, 0.45, 0.36, 0.16, 0.08) + _ellipse(y, x, 0.45, 0.64, 0.16, 0.08)),
        "Consolidation": 70 * _ellipse(y, x, 0.62, 0.25, 0.09, 0.08),
        "Pneumonia": 55 * _ellipse(y, x, 0.6, 0.75, 0.1, 0.07) * (0.6 + 0.4 * np.sin(40 * x) ** 2),
        "Atelectasis": 60 * _band(y, x, 0.66, 0.2, 0.6, 0.38, 0.02),
        "Pneumothorax": -45 * _ellipse(y, x, 0.22, 0.72, 0.09, 0.12) + 50 * _band(y, x, 0.15, 0.62, 0.3, 0.66, 0.008),
        "Pleural Effusion": 85 * lungs * np.clip((y - 0.62) / 0.1, 0, 1),
        "Pleural Other": 60 * _band(y, x, 0.25, 0.13, 0.65, 0.14, 0.015),
        "Fracture": 110 * _band(y, x, 0.2, 0.2, 0.23, 0.3, 0.008),
        "Support Devices": 120 * _band(y, x, 0.0, 0.55, 0.55, 0.52, 0.01) + 120 * _ellipse(y, x, 0.2, 0.85, 0.03, 0.05, 0.01),
    }
    return t


class CXRPainter:
    """Draws label-dependent grayscale radiographs of a fixed shape (H, W) as uint8 arrays."""

    def __init__(self, shape: tuple[int, int] = IMAGE_SHAPE):
        self.shape = shape
        self.templates = _templates(shape)

    def patient_style(self, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
        """A patient's faint low-frequency texture (H, W) and pixel offset (dy, dx)."""
        h, w = self.shape
        coarse = rng.normal(0, 9, size=(h // 10 + 1, w // 10 + 1))
        texture = np.kron(coarse, np.ones((10, 10)))[:h, :w]
        return texture, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5)))

    def draw(
        self,
        strengths: dict[str, float],
        lateral: bool,
        style: tuple[np.ndarray, tuple[int, int]],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """uint8 (H, W) image; ``strengths`` maps a finding to 1 (positive), 0.6 (uncertain) or 0."""
        img = self.templates["lateral" if lateral else "frontal"].copy()
        for finding, s in strengths.items():
            if s > 0 and finding in self.templates:
                # How clearly a finding shows varies from image to image (and a lateral view shows it
                # fainter), so the labels are learnable but not trivially separable.
                img += s * (0.5 if lateral else 1.0) * rng.uniform(0.1, 0.7) * self.templates[finding]
        texture, (dy, dx) = style
        exposure = rng.normal(0, 8)
        img = np.roll(img + texture, (dy, dx), axis=(0, 1)) + exposure + rng.normal(0, 10, size=self.shape)
        return np.clip(img, 0, 255).astype(np.uint8)

    def repaint_atypical(
        self,
        pixels: list[np.ndarray],
        rows: np.ndarray,
        lateral: np.ndarray,
        styles: list[tuple[np.ndarray, tuple[int, int]]],
        rng: np.random.Generator,
    ) -> None:
        """Redraw ``pixels[i]`` for each atypical row ``i`` with the findings of an unrelated study (the
        patient's own style kept); ``lateral`` and ``styles`` are per row."""
        for i in rows:
            pixels[i] = self.draw(strengths_of(sample_study_labels(rng)), bool(lateral[i]), styles[i], rng)


def save_jpeg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=88)


def sample_study_labels(rng: np.random.Generator, allow_uncertain: bool = True) -> dict[str, float]:
    """One study's label cells as the CheXpert labeler writes them: 1.0, 0.0, -1.0 or NaN (not mentioned).

    No Finding is 1.0 when no pathology is positive or uncertain (Support Devices do not count), else NaN.
    Without ``allow_uncertain`` (consensus labels) every cell is 1.0 or 0.0.
    """
    cells: dict[str, float] = {}
    for finding, prev in PREVALENCE.items():
        u = rng.random()
        if u < prev:
            uncertain = allow_uncertain and rng.random() < UNCERTAIN_SHARE.get(finding, 0.08)
            cells[finding] = -1.0 if uncertain else 1.0
        elif not allow_uncertain:
            cells[finding] = 0.0
        else:
            cells[finding] = 0.0 if u < prev + 0.12 else np.nan
    pathology = [v for k, v in cells.items() if k != "Support Devices" and v in (1.0, -1.0)]
    cells["No Finding"] = 0.0 if pathology else 1.0
    if allow_uncertain and pathology:
        cells["No Finding"] = np.nan
    return cells


def strengths_of(cells: dict[str, float]) -> dict[str, float]:
    """Drawing strength per finding: positive 1, uncertain 0.6 (the adapter's U-Ones calls both positive)."""
    return {k: 1.0 if v == 1.0 else 0.6 if v == -1.0 else 0.0 for k, v in cells.items()}


def write_broken_image(path: Path, kind: str, pixels: np.ndarray) -> None:
    """Plant an image that cannot be decoded: 'truncated_jpeg', 'text_as_jpeg' or 'missing_image'."""
    if write_unreadable_file(path, kind):
        return
    save_jpeg(path, pixels)
    truncate_file(path, 2)


@register_synthetic("chexpert")
def write_chexpert(
    raw_dir: Path,
    n_patients: int = 200,
    seed: int = 0,
    awkward: bool = True,
    atypical: float = ATYPICAL_SHARE,
    variant: str = "full",
) -> Path:
    """Write a CheXpert-layout cohort of ``n_patients`` patients into ``raw_dir``; returns ``raw_dir``.

    About one patient in eight goes to valid.csv (the test split), the rest to train.csv. ``variant``:
    ``full`` (``CheXpert-v1.0/``) or ``small`` (the downsampled download, ``CheXpert-v1.0-small/``).
    """
    if variant not in VARIANTS:
        raise ValueError(f"CheXpert variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    release = VARIANTS[variant]
    raw_dir, rng = start_cohort(raw_dir, n_patients, seed, 20)
    (raw_dir / release).mkdir(parents=True, exist_ok=True)
    painter = CXRPainter()
    n_valid = max(3, n_patients // 8)
    sex = rng.choice(["Male", "Female"], size=n_patients, p=[0.59, 0.41])
    base_age = np.clip(rng.normal(60, 18, size=n_patients), 18, 90).round()
    race_names = [r for r, _ in _RACES]
    race_p = np.array([p for _, p in _RACES])
    race = rng.choice(race_names, size=n_patients, p=race_p / race_p.sum())

    rows: list[dict[str, object]] = []
    pixels: list[np.ndarray] = []
    styles: list[tuple[np.ndarray, tuple[int, int]]] = []
    for p in range(n_patients):
        is_valid = p >= n_patients - n_valid
        folder = "valid" if is_valid else "train"
        style = painter.patient_style(rng)
        styles.append(style)
        n_studies = 1 if is_valid else 1 + min(int(rng.poisson(1.2)), 5)
        for s in range(1, n_studies + 1):
            cells = sample_study_labels(rng, allow_uncertain=not is_valid)
            views = ["frontal"] + (["lateral"] if rng.random() < 0.35 else [])
            for v, view in enumerate(views, start=1):
                lateral = view == "lateral"
                rows.append(
                    {
                        "Path": f"{release}/{folder}/patient{p + 1:05d}/study{s}/view{v}_{view}.jpg",
                        "Sex": sex[p],
                        "Age": int(base_age[p]) + (s - 1) // 2,
                        "Frontal/Lateral": "Lateral" if lateral else "Frontal",
                        "AP/PA": "" if lateral else str(rng.choice(["AP", "PA"], p=[0.75, 0.25])),
                        **{label: cells[label] for label in CXR_LABELS},
                        "_patient": p,
                        "_split": folder,
                    }
                )
                pixels.append(painter.draw(strengths_of(cells), lateral, style, rng))
    df = pd.DataFrame(rows)
    df["plant"], df["stage"] = "", ""
    no_demo: set[int] = set()

    if awkward:
        train_patients = rng.permutation(np.arange(n_patients - n_valid))
        unknown, *no_demo_list = (int(x) for x in train_patients[:3])
        no_demo = set(no_demo_list)
        mask = df["_patient"] == unknown
        df.loc[mask, "Sex"], df.loc[mask, "plant"], df.loc[mask, "stage"] = "Unknown", "sex_unknown", "cohort"
        df.loc[df["_patient"].isin(no_demo), "plant"] = "missing_demographics"
        free = rng.permutation(np.flatnonzero((df["_split"] == "train") & (df["plant"] == "")))
        assign_plants(
            df,
            free,
            (("damaged_row", "contract"), ("truncated_jpeg", "decode"), ("text_as_jpeg", "decode"), ("missing_image", "decode")),
        )
        df["Age"] = df["Age"].astype(object)
        df.loc[df["plant"] == "damaged_row", "Age"] = ""
    plant = df["plant"].to_numpy(dtype=object, copy=True)
    rows_atypical, arng = mark_atypical(plant, seed, atypical)
    df["plant"] = plant
    lateral = (df["Frontal/Lateral"] == "Lateral").to_numpy()
    painter.repaint_atypical(pixels, rows_atypical, lateral, [styles[p] for p in df["_patient"]], arng)

    for i, path in enumerate(df["Path"]):
        if df.at[i, "plant"] in ("truncated_jpeg", "text_as_jpeg", "missing_image"):
            write_broken_image(raw_dir / path, str(df.at[i, "plant"]), pixels[i])
        else:
            save_jpeg(raw_dir / path, pixels[i])

    columns = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CXR_LABELS]
    truth = []
    for split, name in (("train", "train.csv"), ("valid", "valid.csv")):
        part = df[df["_split"] == split].reset_index(drop=True)
        part[columns].to_csv(raw_dir / release / name, index=False)
        truth.append(
            pd.DataFrame(
                {
                    "source_file": name,
                    "source_row": part.index + 2,
                    "plant": part["plant"],
                    "stage": part["stage"],
                }
            )
        )
    truth_df = pd.concat(truth, ignore_index=True)
    truth_df[truth_df["plant"] != ""].to_csv(raw_dir / TRUTH_FILE, index=False)

    demo_patients = [p for p in range(n_patients) if p not in no_demo]
    first_age = df.groupby("_patient")["Age"].first()
    pd.DataFrame(
        {
            "PATIENT": [f"patient{p + 1:05d}" for p in demo_patients],
            "PRIMARY_RACE": race[demo_patients],
            "GENDER": sex[demo_patients],
            "AGE_AT_CXR": [first_age[p] for p in demo_patients],
            "ETHNICITY": rng.choice(
                ["Non-Hispanic/Non-Latino", "Hispanic/Latino", "Unknown"],
                size=len(demo_patients),
                p=[0.8, 0.12, 0.08],
            ),
        }
    ).to_csv(raw_dir / "CHEXPERT_DEMO.csv", index=False)
    return raw_dir

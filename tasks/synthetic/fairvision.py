"""A synthetic Harvard FairVision in its published layout (SLO fundus images + per-disease summaries).

Writes, under ``raw_dir``::

    Glaucoma/ReadMe/data_summary_glaucoma.csv  DR/ReadMe/data_summary_dr.csv  AMD/ReadMe/data_summary_amd.csv
    <Disease>/<Training|Validation|Test>/slo_fundus_<id>.jpg

(the OCT ``data_<id>.npz`` volumes are not written: medaudit does not read them). Deterministic from a
seed; the patients are split evenly over the three sub-datasets. Each image is a monochrome SLO-like
fundus (circular field of view, optic disc with cup, vessels, macula) whose findings follow the label:
glaucoma = large optic cup; DR = dark microaneurysms (many, plus bright exudates and blotches when vision
threatening); AMD = bright drusen around the macula (few/small early, many/larger intermediate, a large
lesion when late). The structure is in every channel, so channel 0 (what the model sees) carries it.

With ``awkward=True`` these are planted, each on its own row (``_synthetic_truth.csv`` lists every row's
plant and expected fate; the adapter ignores it):

* ``near_black`` (2 rows): an almost black image (mean <= 1) -> cohort (automatic QC);
* ``blank`` (1): a uniform grey image (std <= 3) -> cohort (automatic QC);
* ``missing_image``, ``truncated_jpeg``, ``cmyk_jpeg``, ``text_as_jpeg`` (1 each) -> decode;
* ``bad_label`` (1, in the DR table): ``dr = "unknown"`` -> contract;
* ``missing_demographics`` (2): empty age, gender, race and ethnicity (accepted; subgroups Unknown);
* ``grayscale_jpeg`` (1): a valid single-channel JPEG (accepted).

Whatever ``awkward`` is, a share ``atypical`` (default 3%) of the other rows are
``atypical_presentation``: the fundus shows the findings of another label of its sub-dataset while the
summary keeps the row's own (accepted; a model gets them right only by memorising them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from tasks.synthetic import register_synthetic
from tasks.synthetic.cohort import (
    ATYPICAL,
    ATYPICAL_SHARE,
    TRUTH_FILE,
    another,
    mark_atypical,
    save_planted_jpeg,
    start_cohort,
    write_unreadable_file,
)

SUBSETS = {"glaucoma": "Glaucoma", "dr": "DR", "amd": "AMD"}
_PREFIX = {"glaucoma": "g", "dr": "d", "amd": "a"}
_LABELS = {
    "glaucoma": (("no", "yes"), (0.52, 0.48)),
    "dr": (("non-vision threatening dr", "vision threatening dr"), (0.88, 0.12)),
    "amd": (("normal", "early amd", "intermediate amd", "late amd"), (0.58, 0.13, 0.14, 0.15)),
}
_USE = (("training", "validation", "test"), (0.6, 0.1, 0.3))
_USE_FOLDER = {"training": "Training", "validation": "Validation", "test": "Test"}
PLANTS = (
    "near_black",
    "near_black",
    "blank",
    "missing_image",
    "truncated_jpeg",
    "cmyk_jpeg",
    "text_as_jpeg",
    "missing_demographics",
    "missing_demographics",
    "grayscale_jpeg",
)
_FATE = {
    "near_black": "cohort",
    "blank": "cohort",
    "missing_image": "decode",
    "truncated_jpeg": "decode",
    "cmyk_jpeg": "decode",
    "text_as_jpeg": "decode",
    "bad_label": "contract",
}
SIZE = 128


def _fundus(rng: np.random.Generator, subset: str, label: str) -> Image.Image:
    """A monochrome SLO-like fundus (RGB JPEG-ready) whose findings follow ``label``."""
    s = SIZE
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    c = s / 2
    r_fov = s * 0.47
    inside = (xx - c) ** 2 + (yy - c) ** 2 <= r_fov**2
    base = rng.uniform(85, 115) + 25 * (1 - ((xx - c) ** 2 + (yy - c) ** 2) / r_fov**2)
    arr = np.where(inside, base, 0).astype(np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    draw = ImageDraw.Draw(img)
    right_eye = rng.random() < 0.5
    dx, dy = (0.72 if right_eye else 0.28) * s, c + rng.uniform(-4, 4)
    # vessels: dark arcs leaving the optic disc
    for k in range(5):
        ang = (k - 2) * 0.5 + rng.uniform(-0.15, 0.15)
        sign = -1 if right_eye else 1
        pts = [(dx + sign * t * np.cos(ang) * s * 0.5, dy + t * np.sin(ang) * s * 0.45 + 8 * t * t * (k - 2)) for t in np.linspace(0, 1, 8)]
        draw.line(pts, fill=int(rng.integers(40, 60)), width=2)
    # optic disc and cup (cup/disc ratio ~0.3 healthy, ~0.75 glaucoma)
    rd = s * 0.085
    draw.ellipse([dx - rd, dy - rd, dx + rd, dy + rd], fill=185)
    cdr = rng.uniform(0.68, 0.85) if label == "yes" else rng.uniform(0.2, 0.4)
    rc = rd * cdr
    draw.ellipse([dx - rc, dy - rc, dx + rc, dy + rc], fill=235)
    # macula: a darker spot in the centre
    mx, my = c + (-0.06 if right_eye else 0.06) * s, c
    draw.ellipse([mx - 7, my - 7, mx + 7, my + 7], fill=70)

    def dots(n: int, radius: float, value: int, spread: float) -> None:
        for _ in range(n):
            x, y = mx + rng.normal(0, spread), my + rng.normal(0, spread)
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=value)

    if subset == "dr":
        vt = label == "vision threatening dr"
        dots(int(rng.integers(25, 40)) if vt else int(rng.integers(6, 14)), 1.2, 35, s * 0.18)
        if vt:
            dots(int(rng.integers(6, 10)), 2.5, 220, s * 0.12)  # hard exudates
            dots(3, 4.5, 45, s * 0.15)  # blot haemorrhages
    elif subset == "amd":
        if label == "early amd":
            dots(int(rng.integers(3, 6)), 1.5, 210, 6)
        elif label == "intermediate amd":
            dots(int(rng.integers(10, 16)), 2.5, 225, 8)
        elif label == "late amd":
            r = rng.uniform(9, 13)
            draw.ellipse([mx - r, my - r, mx + r, my + r], fill=int(rng.choice([25, 240])))
            dots(6, 2.5, 225, 10)
    img = img.filter(ImageFilter.GaussianBlur(0.7))
    grey = np.asarray(img, dtype=np.float32) + rng.normal(0, 3, size=(s, s)).astype(np.float32)
    grey = np.where(inside, grey, 0)
    rgb = np.stack([grey, grey * 0.97, grey * 0.93], axis=-1)  # SLO: near-monochrome, slight tint
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _demographics(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "age": np.round(np.clip(rng.normal(60, 15, n), 18, 95), 2),
        "gender": rng.choice(["female", "male"], n, p=[0.57, 0.43]),
        "race": rng.choice(["asian", "black", "white"], n, p=[0.09, 0.15, 0.76]),
        "ethnicity": rng.choice(["non-hispanic", "hispanic", "unknown"], n, p=[0.9, 0.05, 0.05]),
        "language": rng.choice(["english", "spanish", "other", "unknown"], n, p=[0.9, 0.04, 0.03, 0.03]),
        "maritalstatus": rng.choice(
            ["married or partnered", "single", "divorced", "widowed", "unknown"],
            n,
            p=[0.5, 0.25, 0.1, 0.1, 0.05],
        ),
    }


@register_synthetic("fairvision")
def write_fairvision(
    raw_dir: Path,
    n_patients: int = 200,
    seed: int = 0,
    awkward: bool = True,
    atypical: float = ATYPICAL_SHARE,
    variant: str = "readme",
) -> Path:
    """Write the three FairVision summaries and SLO images for ``n_patients`` patients into ``raw_dir``
    (``variant`` ``readme``: summaries in ``<Disease>/ReadMe/``, as the paper reads them; ``flat``: next
    to the disease folders, as the dataset's README shows).

    Returns ``raw_dir`` (the FairVision root). ``_synthetic_truth.csv`` lists every summary row
    (source_file, source_row = line number, patient_id, subset, label, use, plant, fate).
    """
    if variant not in ("readme", "flat"):
        raise ValueError(f"FairVision variant must be readme or flat, got {variant!r}")
    raw_dir, rng = start_cohort(raw_dir, n_patients, seed, 30 if awkward else 3)
    sizes = [n_patients // 3 + (1 if k < n_patients % 3 else 0) for k in range(3)]
    plant_all = np.full(n_patients, "", dtype=object)
    if awkward:
        slots = rng.choice(n_patients, size=len(PLANTS), replace=False)
        plant_all[slots] = PLANTS
        # the contract failure must sit in the DR table (its disease column gets an unknown value)
        dr_rows = np.arange(sizes[0], sizes[0] + sizes[1])
        plant_all[int(rng.choice(dr_rows[plant_all[dr_rows] == ""]))] = "bad_label"
    _, arng = mark_atypical(plant_all, seed, atypical)

    truth = []
    offset = 0
    for (subset, folder), n in zip(SUBSETS.items(), sizes, strict=True):
        plant = plant_all[offset : offset + n]
        offset += n
        values, p = _LABELS[subset]
        label = rng.choice(values, n, p=p)
        use = rng.choice(_USE[0], n, p=_USE[1])
        ids = np.sort(rng.choice(np.arange(1, 10_001), size=n, replace=False))
        demo = _demographics(rng, n)
        md = np.round(rng.normal(-3 if subset == "glaucoma" else -1, 3, n), 2)
        df = pd.DataFrame(
            {
                "filename": [f"data_{i:05d}.npz" for i in ids],
                "age": demo["age"],
                "gender": demo["gender"],
                "race": demo["race"],
                "ethnicity": demo["ethnicity"],
                "language": demo["language"],
                "maritalstatus": demo["maritalstatus"],
                "md": md,
                subset: label,
                "use": use,
            }
        )
        missing = plant == "missing_demographics"
        df.loc[missing, ["age", "gender", "race", "ethnicity"]] = np.nan
        df.loc[plant == "bad_label", subset] = "unknown"

        for i in range(n):
            folder_path = raw_dir / folder / _USE_FOLDER[use[i]]
            folder_path.mkdir(parents=True, exist_ok=True)
            path = folder_path / f"slo_fundus_{ids[i]:05d}.jpg"
            kind = plant[i]
            if write_unreadable_file(path, kind, "placeholder: SLO export failed\n"):
                continue
            if kind == "near_black":
                arr = (rng.random((SIZE, SIZE, 3)) < 0.01).astype(np.uint8) * 20  # mean ~0.2
                Image.fromarray(arr, "RGB").save(path, "JPEG", quality=95)
                continue
            if kind == "blank":
                Image.new("RGB", (SIZE, SIZE), (128, 128, 128)).save(path, "JPEG", quality=95)
                continue
            img = _fundus(rng, subset, str(label[i]))
            if kind == ATYPICAL:  # drawn as above first, so the writer's generator stays in step
                img = _fundus(arng, subset, another(arng, values, str(label[i])))
            if not save_planted_jpeg(img, path, kind):
                img.save(path, "JPEG", quality=92)

        summary = raw_dir / (f"data_summary_{subset}.csv" if variant == "flat" else f"{folder}/ReadMe/data_summary_{subset}.csv")
        summary.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(summary, index=False)
        truth.append(
            pd.DataFrame(
                {
                    "source_file": f"data_summary_{subset}.csv",
                    "source_row": np.arange(n) + 2,
                    "patient_id": [f"{_PREFIX[subset]}_{i:05d}" for i in ids],
                    "subset": subset,
                    "label": label,
                    "use": use,
                    "plant": plant,
                    "fate": [_FATE.get(k, "accepted") for k in plant],
                }
            )
        )
    pd.concat(truth, ignore_index=True).to_csv(raw_dir / TRUTH_FILE, index=False)
    return raw_dir

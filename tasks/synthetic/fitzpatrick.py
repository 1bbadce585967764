"""A synthetic Fitzpatrick17k in its published layout: ``fitzpatrick17k.csv`` + ``<md5hash>.jpg`` images.

Deterministic from a seed. Every image is a photograph-like JPEG of a skin patch whose tone follows
the Fitzpatrick skin type and whose lesion follows the diagnosis, so a small CNN can learn the coarse
label: non-neoplastic = several diffuse red, scaly patches; benign = one round, regular, brown spot;
malignant = one large irregular lesion with dark, variegated colours.

With ``awkward=True`` the cases real downloads contain are planted (each on its own row, so the
expected fate of every row is known; see ``_synthetic_truth.csv``, which the adapter ignores):

* ``non_dermatology``: the three md5 hashes the paper flags (grayscale X-ray/MRI-like images) -> cohort;
* ``missing_image``: a row whose image was never downloaded -> decode;
* ``truncated_jpeg``, ``cmyk_jpeg``, ``text_as_jpeg``: files that cannot become RGB input -> decode;
* ``duplicate_row``: a second row with an earlier row's md5hash -> dedupe;
* ``missing_label``: an empty ``three_partition_label`` -> contract;
* ``grayscale_jpeg``: a valid single-channel JPEG (accepted, replicated to RGB);
* ``missing_skin_type``: an empty ``fitzpatrick_scale`` (accepted, skin type Unknown).

About 3% of rows have skin type -1 and about 4% carry ``qc = "1 Diagnostic"`` (the test split).
Whatever ``awkward`` is, a share ``atypical`` (default 3%) of the other rows are
``atypical_presentation``: their image shows the lesion of another coarse label while the CSV keeps
the row's own (accepted; a model gets them right only by memorising them).
"""

from __future__ import annotations

import hashlib
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

CSV_NAME = "fitzpatrick17k.csv"
NON_DERMATOLOGY_HASHES = (
    "2ea034fc482e9bd21a5dfa2506cc5d6b",
    "bccab73c32aba48c90602de9bb458272",
    "e69165b3455bb3a5a8b33a0f6fd8a1d3",
)
# nine-partition label -> (coarse label, fine labels, sampling weight)
_NINE = {
    "inflammatory": ("non-neoplastic", ("psoriasis", "lichen planus", "eczema", "acne vulgaris"), 0.58),
    "genodermatoses": ("non-neoplastic", ("neurofibromatosis", "ichthyosis vulgaris"), 0.06),
    "benign dermal": ("benign", ("dermatofibroma", "pyogenic granuloma"), 0.07),
    "benign epidermal": ("benign", ("seborrheic keratosis", "milia"), 0.07),
    "benign melanocyte": ("benign", ("naevocytic naevus", "congenital nevus"), 0.06),
    "malignant epidermal": ("malignant", ("basal cell carcinoma", "squamous cell carcinoma"), 0.08),
    "malignant melanoma": ("malignant", ("melanoma", "lentigo maligna"), 0.04),
    "malignant cutaneous lymphoma": ("malignant", ("mycosis fungoides",), 0.02),
    "malignant dermal": ("malignant", ("kaposi sarcoma", "dermatofibrosarcoma protuberans"), 0.02),
}
_SKIN_RGB = {
    1: (241, 200, 172),
    2: (226, 178, 145),
    3: (200, 146, 110),
    4: (163, 112, 78),
    5: (118, 78, 52),
    6: (78, 52, 36),
    -1: (190, 140, 110),
}
_COARSE = ("non-neoplastic", "malignant", "benign")
_QC_OTHER = ("2 Characteristic", "3 Wrongly labelled", "4 Other", "5 Potentially")
PLANTS = (
    "non_dermatology",
    "missing_image",
    "truncated_jpeg",
    "cmyk_jpeg",
    "text_as_jpeg",
    "missing_label",
    "grayscale_jpeg",
    "missing_skin_type",
)


def _skin_patch(rng: np.random.Generator, size: tuple[int, int], skin_type: int) -> Image.Image:
    """A skin-coloured background with pores/noise; size is (W, H)."""
    w, h = size
    base = np.array(_SKIN_RGB[skin_type], dtype=np.float32) * rng.uniform(0.9, 1.08)
    shade = np.linspace(rng.uniform(-12, 0), rng.uniform(0, 12), w, dtype=np.float32)[None, :, None]
    arr = base[None, None, :] + shade + rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _draw_lesion(rng: np.random.Generator, img: Image.Image, coarse: str) -> Image.Image:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    cx, cy = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65)
    if coarse == "non-neoplastic":
        # several diffuse red/pink plaques with pale scale
        for _ in range(int(rng.integers(3, 7))):
            x, y = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
            rx, ry = rng.uniform(0.06, 0.15) * w, rng.uniform(0.06, 0.15) * h
            red = (int(rng.integers(190, 235)), int(rng.integers(70, 110)), int(rng.integers(80, 120)))
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=red)
            for _ in range(4):
                sx, sy = x + rng.uniform(-rx, rx) * 0.6, y + rng.uniform(-ry, ry) * 0.6
                draw.ellipse([sx - 2, sy - 2, sx + 2, sy + 2], fill=(235, 220, 210))
        return img.filter(ImageFilter.GaussianBlur(1.5))
    if coarse == "benign":
        # one round, regular, evenly brown spot
        r = rng.uniform(0.12, 0.2) * min(w, h)
        brown = (int(rng.integers(110, 150)), int(rng.integers(70, 95)), int(rng.integers(40, 60)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=brown)
        return img.filter(ImageFilter.GaussianBlur(0.8))
    # malignant: large irregular polygon, dark and variegated
    n = 14
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.15, 0.33, n) * min(w, h)
    pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a, r in zip(angles, radii, strict=True)]
    draw.polygon(pts, fill=(int(rng.integers(25, 60)), int(rng.integers(15, 40)), int(rng.integers(20, 50))))
    for colour in ((60, 60, 120), (150, 40, 40), (10, 10, 10)):
        x, y = cx + rng.uniform(-0.1, 0.1) * w, cy + rng.uniform(-0.1, 0.1) * h
        r = rng.uniform(0.03, 0.08) * min(w, h)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return img.filter(ImageFilter.GaussianBlur(0.6))


def _xray_like(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A grayscale radiograph-like image (bright bones on dark), saved as RGB like a web JPEG."""
    w, h = size
    arr = rng.normal(30, 8, size=(h, w)).astype(np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x = rng.uniform(0.2, 0.8) * w
        draw.rectangle([x - 5, 0.1 * h, x + 5, 0.9 * h], fill=int(rng.integers(180, 230)))
    return img.convert("RGB")


def _hash(rng: np.random.Generator) -> str:
    return hashlib.md5(rng.bytes(16)).hexdigest()


@register_synthetic("fitzpatrick")
def write_fitzpatrick(
    raw_dir: Path,
    n_patients: int = 200,
    seed: int = 0,
    awkward: bool = True,
    atypical: float = ATYPICAL_SHARE,
    variant: str = "flat",
) -> Path:
    """Write ``fitzpatrick17k.csv`` and ``<md5hash>.jpg`` images for ``n_patients`` images into ``raw_dir``
    (``variant`` ``flat``: next to the CSV, as the paper's downloader; ``images``: in ``images/``, as the
    dataset repository's download script).

    With ``awkward`` the CSV has ``n_patients + 1`` rows (the planted duplicate row is extra). Returns the
    CSV path; ``_synthetic_truth.csv`` lists every CSV row (source_row = line number) with its plant and
    expected fate (accepted | contract | dedupe | cohort | decode).
    """
    if variant not in ("flat", "images"):
        raise ValueError(f"Fitzpatrick17k variant must be flat or images, got {variant!r}")
    raw_dir, rng = start_cohort(raw_dir, n_patients, seed, 20 if awkward else 1)
    image_dir = raw_dir / "images" if variant == "images" else raw_dir
    image_dir.mkdir(parents=True, exist_ok=True)

    nine_names = list(_NINE)
    weights = np.array([_NINE[k][2] for k in nine_names])
    nine = rng.choice(nine_names, size=n_patients, p=weights / weights.sum())
    skin = rng.choice([1, 2, 3, 4, 5, 6], size=n_patients, p=[0.2, 0.27, 0.2, 0.17, 0.1, 0.06])
    skin[rng.random(n_patients) < 0.03] = -1
    hashes: list[str] = []
    seen = set(NON_DERMATOLOGY_HASHES)
    while len(hashes) < n_patients:
        h = _hash(rng)
        if h not in seen:
            hashes.append(h)
            seen.add(h)
    qc = np.full(n_patients, "", dtype=object)
    u = rng.random(n_patients)
    qc[u < 0.04] = "1 Diagnostic"
    other = (u >= 0.04) & (u < 0.07)
    qc[other] = rng.choice(_QC_OTHER, size=int(other.sum()))

    plant = np.full(n_patients, "", dtype=object)
    if awkward:
        slots = rng.choice(n_patients, size=len(PLANTS) + 2, replace=False)
        order = ["non_dermatology"] * 3 + [p for p in PLANTS if p != "non_dermatology"]
        for slot, name in zip(slots, order, strict=True):
            plant[slot] = name
        for slot, h in zip(np.flatnonzero(plant == "non_dermatology"), NON_DERMATOLOGY_HASHES, strict=True):
            hashes[slot] = h
    _, arng = mark_atypical(plant, seed, atypical)

    rows = []
    for i in range(n_patients):
        coarse, fines, _ = _NINE[nine[i]]
        rows.append(
            {
                "md5hash": hashes[i],
                "fitzpatrick_scale": "" if plant[i] == "missing_skin_type" else str(skin[i]),
                "fitzpatrick_centaur": str(skin[i] if rng.random() < 0.7 else int(np.clip(skin[i] + 1, 1, 6))),
                "label": str(rng.choice(fines)),
                "nine_partition_label": nine[i],
                "three_partition_label": "" if plant[i] == "missing_label" else coarse,
                "qc": qc[i],
                "url": f"https://www.dermaamin.com/site/images/clinical-pic/{hashes[i][:8]}.jpg",
                "url_alphanum": f"httpwwwdermaamincomsiteimagesclinicalpic{hashes[i][:8]}jpg",
            }
        )
        path = image_dir / f"{hashes[i]}.jpg"
        size = [(128, 96), (112, 112), (96, 128), (120, 90)][int(rng.integers(0, 4))]
        kind = plant[i]
        if write_unreadable_file(path, kind):
            continue
        img = _xray_like(rng, size) if kind == "non_dermatology" else _draw_lesion(rng, _skin_patch(rng, size, int(skin[i])), coarse)
        if kind == ATYPICAL:  # drawn as above first, so the writer's generator stays in step
            img = _draw_lesion(arng, _skin_patch(arng, size, int(skin[i])), another(arng, _COARSE, coarse))
        if not save_planted_jpeg(img, path, kind):
            img.save(path, "JPEG", quality=int(rng.integers(80, 95)))

    df = pd.DataFrame(rows)
    fate = pd.Series("accepted", index=df.index, dtype=object)
    fate[np.isin(plant, ["missing_image", "truncated_jpeg", "cmyk_jpeg", "text_as_jpeg"])] = "decode"
    fate[plant == "non_dermatology"] = "cohort"
    fate[plant == "missing_label"] = "contract"
    df["_plant"], df["_fate"] = plant, fate
    if awkward:
        # A re-listed image: a copy of an accepted row, a little later in the file, with another url.
        src = int(rng.choice(np.flatnonzero((plant == "") & (np.arange(n_patients) < n_patients - 1))))
        dup = df.iloc[[src]].assign(url=df.at[src, "url"] + "?v=2", _plant="duplicate_row", _fate="dedupe")
        at = int(rng.integers(src + 1, n_patients + 1))
        df = pd.concat([df.iloc[:at], dup, df.iloc[at:]], ignore_index=True)

    csv_path = raw_dir / CSV_NAME
    df.drop(columns=["_plant", "_fate"]).to_csv(csv_path, index=False)
    truth = pd.DataFrame(
        {
            "source_row": np.arange(len(df)) + 2,
            "md5hash": df["md5hash"],
            "plant": df["_plant"],
            "fate": df["_fate"],
        }
    )
    truth.to_csv(raw_dir / TRUTH_FILE, index=False)
    return csv_path

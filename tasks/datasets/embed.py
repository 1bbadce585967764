"""EMBED (method §1.5): screening mammograms -> one record per image, BI-RADS density (4 classes).

``raw_dir`` holds the two tables of the EMBED Open Data release and the images converted to PNG, in
either of two layouts (detected)::

    raw_dir/                                  as released (and as the paper's code reads it)
      tables/EMBED_OpenData_clinical_reduced.csv   empi_anon, acc_anon, desc, tissueden, asses, RACE_DESC,
                                                   GENDER_DESC, age_at_study, ... (one row per exam finding)
      tables/EMBED_OpenData_metadata_reduced.csv   empi_anon, acc_anon, anon_dicom_path, ViewPosition, ...
                                                   (one row per DICOM image)
      png/1024x768/<empi_anon>/<basename of anon_dicom_path, .dcm -> .png>

    raw_dir/                                  a flat copy
      EMBED_OpenData_clinical_reduced.csv, EMBED_OpenData_metadata_reduced.csv
      png/<empi_anon>/<...>.png

The PNG folder is ``png/<W>x<H>/`` when ``png/`` holds exactly one such size folder, else ``png/``.
Options ``tables_dir`` and ``png_root`` (relative to ``raw_dir``, or absolute) name other folders. PNGs
are expected 8-bit (windowed as in the paper's ``resize_embed.py``); a 16-bit PNG is a decode failure,
not a silently clipped input.

**Records and reconciliation.** A record is an image, so the primary table is the *metadata* table:
raw rows = its rows, and every metadata row that is not a record is in the quarantine with the reason
(reasons that come from the clinical table name its line). Clinical rows are attributes of exams, not
records: one that matches no image is simply unused, and the extra rows of a multi-finding exam are
join duplicates of the same image (the paper's drop of duplicate ``anon_dicom_path`` keeps the first).
Clinical rows failing the contract cannot be attributed to an image; they are quarantined under the
clinical file and added to ``n_raw_rows``.

Cohort, in the paper's order (``embed.ipynb``); every exclusion is quarantined with its stage:

1. screening exams only: ``desc`` contains "screen" (case-insensitive) -> else 'cohort';
2. join of metadata and clinical on (``empi_anon``, ``acc_anon``) -> an image whose exam has no
   clinical row: 'cohort';
3. duplicate ``anon_dicom_path``: the first (metadata order, then clinical order) is kept -> 'dedupe';
4. missing ``RACE_DESC`` -> 'cohort';
5. ``ViewPosition`` in {MLO, CC} -> else 'cohort';
6. ``tissueden == 5`` or ``GENDER_DESC == "Male"`` -> 'cohort';
7. missing ``tissueden`` -> 'cohort'.

Label: ``tissueden - 1`` -> BI-RADS A..D, one-hot. Race: "African American  or Black" -> Black,
"Caucasian or White" -> White, Asian kept, everything else Other/Unknown (the contract's mapping).

Split: test patients drawn with ``np.random.default_rng(split_seed)`` (option, default 420 as the
paper's seed) from the sorted unique ``empi_anon`` of the final cohort, so the split does not depend on
row order. Number of test patients: option ``n_test_patients``; default ``min(500, ceil(10% of
patients))`` - the paper's 500 on the real cohort (~19k patients), a proportionate split on small
copies. (The paper used the legacy ``np.random.seed(420)`` + ``np.random.choice`` over unsorted ids,
so its exact test patients are not reproduced.)

Subgroups: race, view (MLO/CC), density (BIRADS A-D), exam assessment (``asses`` letters), age band.
Inputs: grayscale, 64 (H) x 48 (W) by default (option ``image_height``; width = 3/4 of it), float32 in
[-1, 1], channels-first (1, H, W).
"""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from tasks.datasets.base import DatasetAdapter, InputChunk, TaskSpec, register_dataset
from tasks.datasets.contracts import read_csv_as_strings, validate_table
from tasks.datasets.imaging import decode_image_files, image_task
from tasks.datasets.layout import SideTableRejects, count_csv_rows, int_option, one_hot, records_frame
from tasks.datasets.quarantine import Quarantine
from tasks.datasets.reasons import duplicate, line_of, shown_series
from tasks.datasets.recipes import QUICK_IMAGE, paper_pool
from tasks.datasets.variants import LayoutVariant, detect_variant
from tasks.errors import ConfigError, StructuralError

CLINICAL = "EMBED_OpenData_clinical_reduced.csv"
METADATA = "EMBED_OpenData_metadata_reduced.csv"
DEFAULT_PNG_ROOT = "png"
TABLES_DIR = "tables"
_SIZE_FOLDER_RE = re.compile(r"\d+x\d+")
DEFAULT_HEIGHT = 64
DENSITY_LABELS: tuple[str, ...] = ("BIRADS-A", "BIRADS-B", "BIRADS-C", "BIRADS-D")
VIEWS = ("MLO", "CC")
KEYS = ["empi_anon", "acc_anon"]
_CLINICAL_COLUMNS = ["desc", "tissueden", "asses", "RACE_DESC", "GENDER_DESC", "age_at_study"]


def png_name(anon_dicom_path: str) -> str:
    """File name of an image's PNG: the basename of ``anon_dicom_path`` with .dcm replaced by .png."""
    name = PurePosixPath(str(anon_dicom_path).strip().replace("\\", "/")).name
    return (name[:-4] if name.lower().endswith(".dcm") else name) + ".png"


def _embed_task(height: int) -> TaskSpec:
    # breast density does not depend on laterality: flip views are fine
    return image_task("multiclass", DENSITY_LABELS, (1, height, (height * 3) // 4))


@register_dataset
class Embed(DatasetAdapter):
    name = "embed"
    description = "EMBED screening mammograms: BI-RADS density A-D, 64x48 grayscale, one record per image"
    layout = (f"[{TABLES_DIR}/]{CLINICAL}", f"[{TABLES_DIR}/]{METADATA}", f"{DEFAULT_PNG_ROOT}/[<size>/]")
    variants = (
        LayoutVariant("as released", (f"{TABLES_DIR}/{CLINICAL}", f"{TABLES_DIR}/{METADATA}"), {"tables_dir": TABLES_DIR}),
        LayoutVariant("flat copy", (CLINICAL, METADATA), {"tables_dir": "."}),
    )
    # The paper's EMBED augmentation (rotation, contrast, brightness; no flip or shift) is not a registered
    # policy: the paper preset trains without augmentation (docs/DATASETS.md).
    default_pools: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": paper_pool(
            "wrn_28_2",
            epochs=30,
            learning_rate=0.1,
            weight_decay=1e-8,
            batch_size=512,
            momentum=0.9,
            ema_decay=0.995,
            warmup_fraction=0.1,
            grad_accum_steps=2,
            augment="none",
            eval_views=2,
        ),
        "quick": QUICK_IMAGE,
    }
    option_help: ClassVar[dict[str, str] | None] = {
        "image_height": "input height in pixels, width = 3/4 of it (default 64)",
        "split_seed": "seed of the test-patient draw (default 420)",
        "n_test_patients": "test patients (default min(500, 10% of patients))",
        "png_root": "PNG folder, absolute or under raw_dir (default: detected, png/<size> or png)",
        "tables_dir": "folder of the two CSVs, under raw_dir (default: detected, tables or raw_dir)",
    }
    task = _embed_task(DEFAULT_HEIGHT)

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self.task = _embed_task(int_option(self.options, "image_height", DEFAULT_HEIGHT, 8))
        self.split_seed = int_option(self.options, "split_seed", 420, 0)
        self.n_test_patients: int | None = None
        if self.options.get("n_test_patients") is not None:
            self.n_test_patients = int_option(self.options, "n_test_patients", 500, 0)
        for key in ("png_root", "tables_dir"):
            if key in self.options and not str(self.options[key] or "").strip():
                raise ConfigError(f"option {key} must name a folder (absolute, or relative to the raw folder)")
        self.png_root: str | None = None if self.options.get("png_root") is None else str(self.options["png_root"])
        self.tables_dir: str | None = None if self.options.get("tables_dir") is None else str(self.options["tables_dir"])
        self._clinical_rejects = SideTableRejects()

    def _png_root(self, raw_dir: Path) -> Path:
        if self.png_root is not None:
            root = Path(self.png_root)
            return root if root.is_absolute() else Path(raw_dir) / root
        base = Path(raw_dir) / DEFAULT_PNG_ROOT
        sizes = sorted(p for p in base.iterdir() if p.is_dir() and _SIZE_FOLDER_RE.fullmatch(p.name)) if base.is_dir() else []
        if len(sizes) > 1:
            raise StructuralError(
                base,
                f"several image sizes ({', '.join(p.name for p in sizes)})",
                expected=f"one; choose with --option png_root={DEFAULT_PNG_ROOT}/<size>",
            )
        return sizes[0] if sizes else base

    def _table(self, raw_dir: Path, name: str) -> Path:
        """Path of one of the two tables: under ``tables_dir`` if set, else where the detected layout keeps it."""
        folder = self.tables_dir
        if folder is None:
            hint = "--option tables_dir=<the folder with both CSVs>"
            folder = detect_variant(self.name, raw_dir, self.variants, hint).settings["tables_dir"]
        path = Path(folder)
        return (path if path.is_absolute() else Path(raw_dir) / path) / name

    def n_raw_rows(self, raw_dir: Path) -> int:
        """Metadata rows (one per image) plus the clinical rows that failed the contract (those are in
        the quarantine under the clinical file, so they must be counted)."""
        raw_dir = Path(raw_dir)
        rejected = self._clinical_rejects.count([self._table(raw_dir, CLINICAL)], lambda q: self._validate_clinical(raw_dir, q))
        return count_csv_rows(self._table(raw_dir, METADATA)) + rejected

    def _validate_clinical(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        clin = validate_table(read_csv_as_strings(self._table(raw_dir, CLINICAL)), self.contract, CLINICAL, quarantine)
        return clin[[*KEYS, *_CLINICAL_COLUMNS]].assign(_clin_row=clin["_source_row"].to_numpy())

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        """One row per accepted image: raw_patient_id (empi_anon), split, y_birads_a..d, race, view,
        density, assessment, age_band, image (path under png_root), _source_file, _source_row."""
        raw_dir = Path(raw_dir)
        meta = validate_table(read_csv_as_strings(self._table(raw_dir, METADATA)), self.contract, METADATA, quarantine)
        clin = self._clinical_rejects.read([self._table(raw_dir, CLINICAL)], quarantine, lambda q: self._validate_clinical(raw_dir, q))
        meta = meta[[*KEYS, "anon_dicom_path", "ViewPosition", "_source_file", "_source_row"]]

        # 1-2: screening exams, joined to their images. The join is done image-first so every metadata
        # row's fate is known: rows of an image = its exam's clinical rows, in clinical-file order.
        clin["_screen"] = clin["desc"].fillna("").str.contains("screen", case=False, regex=False)
        joined = meta.merge(clin, on=KEYS, how="left", sort=False, indicator=True)
        joined = joined.sort_values(["_source_row", "_clin_row"], kind="stable").reset_index(drop=True)
        joined["_screen"] = joined["_screen"].fillna(False).astype(bool)
        # a left join gives an unmatched image one row marked left_only, a matched one only 'both' rows
        has_clin = joined["_merge"].eq("both").to_numpy()
        has_screen = joined.groupby("_source_row", sort=False)["_screen"].transform("max").astype(bool).to_numpy()
        first_of_image = ~joined["_source_row"].duplicated()

        diag = first_of_image & has_clin & ~has_screen
        self._quarantine(
            quarantine,
            joined[diag],
            "cohort",
            "desc",
            "desc: not a screening exam (desc "
            + joined.loc[diag, "desc"].map(repr).astype(str)
            + ", "
            + joined.loc[diag, "_clin_row"].map(lambda r: line_of(CLINICAL, r)).astype(str)
            + "); the paper keeps screening exams only",
        )
        orphan = first_of_image & ~has_clin
        self._quarantine(
            quarantine,
            joined[orphan],
            "cohort",
            "acc_anon",
            f"acc_anon: the image's exam (empi_anon, acc_anon) has no row in {CLINICAL}; the join drops it",
        )
        df = joined[joined["_screen"]].reset_index(drop=True)

        # 3: duplicate anon_dicom_path. A repeat from the *same* metadata row is a second finding of the
        # exam (join expansion, not a raw row); a repeat from another metadata row is a duplicate image.
        first_line = df.groupby("anon_dicom_path", sort=False)["_source_row"].transform("first")
        from_other_row = df["_source_row"] != first_line  # all rows of a duplicate image, none of the first
        listed = from_other_row & ~df["_source_row"].duplicated()
        self._quarantine(
            quarantine,
            df[listed],
            "dedupe",
            "anon_dicom_path",
            duplicate("anon_dicom_path", "image", first_line[listed]),
        )
        df = df[~df["anon_dicom_path"].duplicated(keep="first")].reset_index(drop=True)

        # 4: race must be recorded
        no_race = df["RACE_DESC"].isna()
        self._quarantine(
            quarantine,
            df[no_race],
            "cohort",
            "RACE_DESC",
            "RACE_DESC: missing ("
            + df.loc[no_race, "_clin_row"].map(lambda r: line_of(CLINICAL, r)).astype(str)
            + "); the paper drops images without race",
        )
        df = df[~no_race].reset_index(drop=True)

        # 5: standard screening views only
        view = df["ViewPosition"].fillna("").str.strip()
        odd_view = ~view.isin(VIEWS)
        self._quarantine(
            quarantine,
            df[odd_view],
            "cohort",
            "ViewPosition",
            "ViewPosition: " + shown_series(df.loc[odd_view, "ViewPosition"]) + " is not MLO or CC",
        )
        df = df[~odd_view].reset_index(drop=True)

        # 6: tissueden 5 (EMBED's code for male patients) and male patients
        den5 = df["tissueden"].eq(5).fillna(False).astype(bool)
        male = df["GENDER_DESC"].fillna("").str.strip().str.lower().eq("male")
        self._quarantine(
            quarantine,
            df[den5],
            "cohort",
            "tissueden",
            "tissueden: 5 ("
            + df.loc[den5, "_clin_row"].map(lambda r: line_of(CLINICAL, r)).astype(str)
            + ", GENDER_DESC "
            + shown_series(df.loc[den5, "GENDER_DESC"])
            + "); the paper drops density 5 and male patients",
        )
        self._quarantine(
            quarantine,
            df[male & ~den5],
            "cohort",
            "GENDER_DESC",
            "GENDER_DESC: 'Male' ("
            + df.loc[male & ~den5, "_clin_row"].map(lambda r: line_of(CLINICAL, r)).astype(str)
            + "); the paper drops density 5 and male patients",
        )
        df = df[~(den5 | male)].reset_index(drop=True)

        # 7: a density label is needed
        no_density = df["tissueden"].isna()
        self._quarantine(
            quarantine,
            df[no_density],
            "cohort",
            "tissueden",
            "tissueden: missing ("
            + df.loc[no_density, "_clin_row"].map(lambda r: line_of(CLINICAL, r)).astype(str)
            + "); no density label",
        )
        df = df[~no_density].reset_index(drop=True)

        patients = df["empi_anon"].astype("int64")
        return records_frame(
            df,
            self.contract,
            patient=patients.astype(str),
            split=self._split(patients),
            labels=one_hot(df["tissueden"].astype("int64").to_numpy() - 1, DENSITY_LABELS),
            extra={"image": patients.astype(str) + "/" + df["anon_dicom_path"].map(png_name)},
        )

    def _split(self, patients: pd.Series) -> np.ndarray:
        """'test' for the records of the drawn test patients, else 'train' (patient-disjoint)."""
        unique = np.sort(patients.unique())
        n = self.n_test_patients if self.n_test_patients is not None else min(500, math.ceil(0.1 * len(unique)))
        if n > len(unique):
            raise ConfigError(f"option n_test_patients={n} exceeds the {len(unique)} patients of the EMBED cohort")
        test = np.random.default_rng(self.split_seed).choice(unique, size=n, replace=False)
        return np.where(patients.isin(test), "test", "train")

    @staticmethod
    def _quarantine(quarantine: Quarantine, rows: pd.DataFrame, stage: str, column: str, reasons: pd.Series) -> None:
        if len(rows):
            quarantine.add_rows(rows, stage, column, reasons)

    def decode_inputs(self, records: pd.DataFrame, raw_dir: Path) -> InputChunk:
        """x float32 (n_ok, 1, H, W) in [-1, 1] for the rows of ``records`` (index = positions)."""
        root = self._png_root(Path(raw_dir))
        size = (self.task.input_shape[1], self.task.input_shape[2])
        return decode_image_files(
            records.index,
            [root / p for p in records["image"]],
            size,
            mode="L",
            accepted_modes=frozenset({"L", "RGB"}),
        )

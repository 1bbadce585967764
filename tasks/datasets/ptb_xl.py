"""PTB-XL 1.0.3 (method §1.6): 12-lead ECGs -> one record per ECG.

``raw_dir`` is the release root as downloaded from PhysioNet::

    raw_dir/
      ptbxl_database.csv    ecg_id, patient_id, age, sex, scp_codes, strat_fold, filename_lr, extra_beats, ...
      scp_statements.csv    statement code (first, unnamed column), diagnostic, diagnostic_class, ...
      records100/00000/00001_lr.hea, .dat     (WFDB, 100 Hz, 10 s)

As the paper (``ptb-xl.ipynb``):

* labels NORM, MI, STTC, CD, HYP: for every code in ``scp_codes`` that scp_statements.csv marks
  ``diagnostic == 1``, its ``diagnostic_class`` is positive (likelihoods ignored; codes missing from
  scp_statements.csv are ignored);
* records with only non-diagnostic statements keep an all-zero label vector. They are kept (as the
  paper) and marked with the boolean column ``no_diagnostic_label``; the softmax-mass score transform
  flags them ``no_positive_label`` and scores them by the joint Bernoulli likelihood (design D12, method pitfall 2);
* split: ``strat_fold == 10`` -> test, folds 1-9 -> train (folds are patient-disjoint; test records of
  a patient who also has training records would be quarantined);
* patient = ``patient_id`` (a float in the file); subgroups sex (0 Male, 1 Female), extra_beats
  (present/absent), age band (ages above 89 are published as 300 -> 80+).

Inputs: ``wfdb.rdsamp(raw_dir / filename_lr)`` at 100 Hz -> float32 (12, 1000) channels-first in mV,
leads I, II, III, AVR, AVL, AVF, V1-V6, **not normalised** (as the paper, method pitfall 21; the training
recipe decides about standardisation). A record that cannot be read, has another sampling rate or
length, lacks a lead, or holds NaN samples is a decode failure with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import wfdb

from tasks.datasets.base import DatasetAdapter, InputChunk, TaskSpec, register_dataset
from tasks.datasets.contracts import read_csv_as_strings, validate_table
from tasks.datasets.layout import (
    SideTableRejects,
    count_csv_rows,
    decode_each,
    label_column,
    quarantine_duplicates,
    quarantine_split_overlap,
    records_frame,
)
from tasks.datasets.quarantine import Quarantine
from tasks.datasets.reasons import decode_failure, exception_text, unmatched
from tasks.datasets.recipes import QUICK_SIGNAL, paper_pool
from tasks.errors import StructuralError

DATABASE = "ptbxl_database.csv"
STATEMENTS = "scp_statements.csv"
SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
LEADS: tuple[str, ...] = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
SAMPLING_RATE = 100
N_SAMPLES = 1000
TEST_FOLD = 10


class _RecordError(Exception):
    """A WFDB record that cannot become model input; the message is the quarantine reason."""


def parse_scp_codes(text: str) -> dict[str, float] | None:
    """``"{'NORM': 100.0, 'SR': 0.0}"`` -> dict; None when the cell is not such a literal."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None
    return value


def diagnostic_classes(statements: pd.DataFrame) -> dict[str, str]:
    """scp_statements rows -> {code: superclass} for the statements with diagnostic == 1."""
    diag = statements[(statements["diagnostic"] == 1.0) & statements["diagnostic_class"].notna()]
    return dict(zip(diag["scp_code"].astype(str), diag["diagnostic_class"].astype(str), strict=True))


def read_ecg(path: Path) -> np.ndarray:
    """One WFDB record -> float32 (12, 1000) in the LEADS order; raises _RecordError(reason)."""
    try:
        signal, fields = wfdb.rdsamp(str(path))
    except FileNotFoundError:
        raise _RecordError(decode_failure("WFDB record listed but its .hea/.dat file is missing")) from None
    except Exception as exc:  # wfdb raises many exception types for a damaged header or signal file
        raise _RecordError(decode_failure(f"cannot read WFDB record ({exception_text(exc, path)})", path)) from exc
    if fields["fs"] != SAMPLING_RATE:
        raise _RecordError(decode_failure(f"sampling rate {fields['fs']} Hz, expected {SAMPLING_RATE} Hz"))
    names = [str(n).upper() for n in fields["sig_name"]]
    if sorted(names) != sorted(LEADS):
        raise _RecordError(decode_failure(f"leads {names}, expected the 12 standard leads {list(LEADS)}"))
    if signal.shape != (N_SAMPLES, len(LEADS)):
        raise _RecordError(decode_failure(f"signal shape {signal.shape}, expected ({N_SAMPLES}, {len(LEADS)}) (10 s at 100 Hz)"))
    if not np.isfinite(signal).all():
        raise _RecordError(decode_failure(f"{int((~np.isfinite(signal)).sum())} missing (NaN) samples"))
    order = [names.index(lead) for lead in LEADS]
    return np.ascontiguousarray(signal[:, order].T, dtype=np.float32)


@register_dataset
class PTBXL(DatasetAdapter):
    name = "ptb-xl"
    description = "PTB-XL 12-lead ECGs: 5 diagnostic superclasses, 100 Hz x 10 s, one record per ECG"
    layout = (DATABASE, STATEMENTS, "records100/")
    default_pools: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": paper_pool(
            "resnet1d_128",
            epochs=100,
            learning_rate=0.25,
            weight_decay=5e-3,
            batch_size=512,
            momentum=0.9,
            ema_decay=0.995,
            warmup_fraction=0.05,
            grad_accum_steps=2,
        ),
        "quick": QUICK_SIGNAL,
    }
    option_help: ClassVar[dict[str, str] | None] = {}
    task = TaskSpec(
        kind="multilabel",
        label_names=SUPERCLASSES,
        input_shape=(len(LEADS), N_SAMPLES),
        modality="signal",
        score_transform="softmax_mass",
        default_architecture="resnet1d_128",
    )

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self._statement_rejects = SideTableRejects()

    def n_raw_rows(self, raw_dir: Path) -> int:
        """Rows of ptbxl_database.csv plus the scp_statements.csv rows that failed their contract (those
        are in the quarantine too)."""
        raw_dir = Path(raw_dir)
        n = count_csv_rows(raw_dir / DATABASE)  # a CSV reader: `report` cells hold quoted newlines
        return n + self._statement_rejects.count([raw_dir / STATEMENTS], lambda q: self._validate_statements(raw_dir, q))

    def _validate_statements(self, raw_dir: Path, quarantine: Quarantine) -> dict[str, str]:
        """scp_statements.csv validated -> {diagnostic code: superclass}."""
        path = Path(raw_dir) / STATEMENTS
        raw = read_csv_as_strings(path)
        first = raw.columns[0]
        if first.startswith("_"):
            raise StructuralError(path, "no columns", column="scp_code", expected="the statement code as first column")
        # The release leaves the code column's header empty (pandas: 'Unnamed: 0'); name it.
        raw = raw.rename(columns={first: "scp_code"})
        return diagnostic_classes(validate_table(raw, self.contract, STATEMENTS, quarantine))

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        """One row per accepted ECG: raw_patient_id, split, y_norm, y_mi, y_sttc, y_cd, y_hyp,
        no_diagnostic_label, sex, extra_beats, age_band, filename_lr, _source_file, _source_row."""
        raw_dir = Path(raw_dir)
        df = validate_table(read_csv_as_strings(raw_dir / DATABASE), self.contract, DATABASE, quarantine)

        # A plain list, not Series.map: pandas would turn string-column results that are dicts into a
        # struct column with the union of all keys.
        codes = pd.Series([parse_scp_codes(str(s)) for s in df["scp_codes"]], index=df.index, dtype=object)
        bad = codes.isna()
        quarantine.add_rows(
            df[bad],
            "contract",
            "scp_codes",
            "scp_codes: expected a dict literal such as {'NORM': 100.0, 'SR': 0.0}, found "
            + df.loc[bad, "scp_codes"].astype(str).str.slice(0, 60),
        )
        # The 100 Hz record of the release; this also keeps the path inside raw_dir.
        bad_file = ~bad & ~df["filename_lr"].str.fullmatch(r"records100/\d+/\d+_lr").astype(bool)
        quarantine.add_rows(
            df[bad_file],
            "contract",
            "filename_lr",
            unmatched("filename_lr", "records100/<NNNNN>/<NNNNN>_lr"),
        )
        keep = ~bad & ~bad_file
        df = df[keep].assign(codes=codes[keep]).reset_index(drop=True)

        df = quarantine_duplicates(df, "ecg_id", "ECG", quarantine)

        df["split"] = np.where(df["strat_fold"] == TEST_FOLD, "test", "train")
        df = quarantine_split_overlap(
            df,
            df["patient_id"].astype("int64"),
            "strat_fold",
            quarantine,
            reason="strat_fold: patient also has training records in folds 1-9; "
            "a test record must come from a patient outside the training split",
        )

        classes = self._statement_rejects.read([raw_dir / STATEMENTS], quarantine, lambda q: self._validate_statements(raw_dir, q))
        y = np.zeros((len(df), len(SUPERCLASSES)), dtype=np.float64)
        column = {c: i for i, c in enumerate(SUPERCLASSES)}
        for row, codes_of_record in enumerate(df["codes"]):
            for code in codes_of_record:
                if code in classes:
                    y[row, column[classes[code]]] = 1.0

        df["extra_beats_noted"] = df["extra_beats"].notna().astype(str)
        return records_frame(
            df,
            self.contract,
            patient=df["patient_id"].astype("int64").astype(str),
            split=df["split"],
            labels={label_column(label): y[:, i] for i, label in enumerate(SUPERCLASSES)},
            extra={"no_diagnostic_label": ~y.any(axis=1), "filename_lr": df["filename_lr"].astype(str)},
        )

    def decode_inputs(self, records: pd.DataFrame, raw_dir: Path) -> InputChunk:
        """x float32 (n_ok, 12, 1000) in mV for the rows of ``records`` (index = positions)."""
        paths = (Path(raw_dir) / name for name in records["filename_lr"])
        return decode_each(records.index, paths, read_ecg, (_RecordError,), self.task.input_shape)

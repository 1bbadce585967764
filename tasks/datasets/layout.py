"""Reading a published layout: the pieces every adapter does the same way, in one place.

* naming: ``label_column`` (the records-frame column of a label), ``one_hot``;
* files: ``count_csv_rows`` (for the accepted + quarantined reconciliation), ``file_key``;
* options: ``int_option`` (validated whole-number adapter options);
* rows: ``quarantine_duplicates`` (keep the first row of a key), ``quarantine_split_overlap`` (a test
  record must not belong to a training patient), ``SideTableRejects`` (contract failures of the tables
  read next to the primary one, which ``n_raw_rows`` must count);
* the records frame: ``records_frame`` (the columns ``DatasetAdapter.read_records`` promises);
* inputs: ``decode_each`` (per-record decoding into an ``InputChunk``, failures with their reason).

Image decoding is in ``tasks.datasets.imaging``; dataset conventions (label lists, cohort rules) stay
in the adapter modules.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from tasks.datasets import reasons
from tasks.datasets.base import InputChunk
from tasks.datasets.contracts import DatasetContract
from tasks.datasets.quarantine import Quarantine
from tasks.errors import ConfigError, StructuralError

T = TypeVar("T")
FileKey = tuple[str, int, int]


def label_column(name: str) -> str:
    """Records-frame column of a label: ``y_`` + lower case, non-alphanumerics -> '_' (as the snapshot)."""
    return "y_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def one_hot(codes: np.ndarray, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Integer class codes (n,) -> {y_<label>: float64 (n,)} one-hot columns in ``labels`` order."""
    codes = np.asarray(codes, dtype=np.int64)
    return {label_column(name): (codes == k).astype(np.float64) for k, name in enumerate(labels)}


def count_csv_rows(path: Path) -> int:
    """Data rows of a CSV (``.csv`` or ``.csv.gz``): header and blank lines excluded, a quoted newline
    (e.g. PTB-XL's ``report``) stays inside its row. StructuralError when the file is missing."""
    path = Path(path)
    if not path.exists():
        raise StructuralError(path, "file not found")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as fh:
        return max(sum(1 for row in csv.reader(fh) if row) - 1, 0)


def file_key(path: Path) -> FileKey:
    """Identity of a file's current content for caching: resolved path, mtime, size."""
    path = Path(path)
    if not path.exists():
        raise StructuralError(path, "file not found")
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def int_option(options: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    """A whole-number option, validated (ConfigError naming the option otherwise)."""
    raw = options.get(key, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = minimum - 1
    if isinstance(raw, bool) or value < minimum or str(value) != str(raw).strip():
        raise ConfigError(f"option {key} must be a whole number >= {minimum}, got {raw!r}")
    return value


def quarantine_duplicates(df: pd.DataFrame, key: str, what: str, quarantine: Quarantine) -> pd.DataFrame:
    """Keep the first row of each ``key`` value; later copies go to the quarantine (stage 'dedupe').

    The reason names the first row's line, never the value (keys are identifiers or file names).
    """
    dup = df[key].duplicated(keep="first")
    if dup.any():
        first = df.groupby(key, sort=False)["_source_row"].transform("first")
        quarantine.add_rows(df[dup], "dedupe", key, reasons.duplicate(key, what, first[dup]))
    return df[~dup].reset_index(drop=True)


def quarantine_unmatched(df: pd.DataFrame, column: str, pattern: str, expected: str, quarantine: Quarantine) -> pd.DataFrame:
    """Rows whose ``column`` (stripped) does not fully match ``pattern`` -> quarantine (stage 'contract').

    For cells that become file names: a value outside the pattern could point outside ``raw_dir``.
    The value is not quoted: such a cell names a patient's file.
    """
    bad = ~df[column].str.strip().str.fullmatch(pattern).fillna(False).astype(bool)
    quarantine.add_rows(df[bad], "contract", column, reasons.unmatched(column, expected))
    return df[~bad].reset_index(drop=True)


def quarantine_split_overlap(
    df: pd.DataFrame, patient: pd.Series, column: str, quarantine: Quarantine, *, reason: str | None = None
) -> pd.DataFrame:
    """Quarantine test rows of patients who also have train rows (stage 'cohort').

    In a patient-level audit a test record is a non-member; one from a training patient is not.
    ``patient`` is aligned with ``df``, which needs a ``split`` column; ``column`` is the raw column the
    patient id (or the split) comes from, named in the quarantine with ``reason``.
    """
    overlap = (df["split"] == "test") & patient.isin(patient[df["split"] == "train"])
    quarantine.add_rows(
        df[overlap],
        "cohort",
        column,
        reason or f"{column}: patient also has training records; a test record must come from a patient outside the training split",
    )
    return df[~overlap].reset_index(drop=True)


class SideTableRejects:
    """Rows of the tables read next to the primary one (demographics, statements, ...) that failed
    their contract. They are in the quarantine, so ``n_raw_rows`` must count them; the count is kept
    per file content, so ``n_raw_rows`` after ``read_records`` does not validate the tables again."""

    def __init__(self) -> None:
        self._counts: dict[tuple[FileKey, ...], int] = {}

    def read(self, paths: Iterable[Path], quarantine: Quarantine, validate: Callable[[Quarantine], T]) -> T:
        """``validate(q)`` reads and validates the tables at ``paths`` into ``q``; its rejects go to
        ``quarantine`` and are remembered."""
        key = tuple(file_key(p) for p in paths)
        local = Quarantine()
        result = validate(local)
        quarantine.entries.extend(local.entries)
        self._counts[key] = len(local)
        return result

    def count(self, paths: Iterable[Path], validate: Callable[[Quarantine], object]) -> int:
        """Rejected rows of the tables at ``paths`` (validated now unless already known)."""
        paths = list(paths)
        key = tuple(file_key(p) for p in paths)
        if key not in self._counts:
            self.read(paths, Quarantine(), validate)
        return self._counts[key]


def records_frame(
    df: pd.DataFrame,
    contract: DatasetContract,
    *,
    patient: Iterable[Any],
    split: Iterable[str],
    labels: Mapping[str, Iterable[float]],
    extra: Mapping[str, Iterable[Any]] | None = None,
) -> pd.DataFrame:
    """The records frame of ``DatasetAdapter.read_records`` for the accepted rows ``df``: raw_patient_id,
    split, the label columns, the contract's subgroup attributes (mapped from ``df``), ``extra``
    columns, then _source_file and _source_row from ``df``. Every column is taken by position."""
    records = pd.DataFrame(
        {"raw_patient_id": np.asarray(patient).astype(str), "split": np.asarray(split), **{k: np.asarray(v) for k, v in labels.items()}}
    )
    for attr, sg in contract.subgroups.items():
        records[attr] = contract.map_subgroup(attr, df[sg.column]).to_numpy()
    for name, values in (extra or {}).items():
        records[name] = np.asarray(values)
    records["_source_file"] = df["_source_file"].to_numpy()
    records["_source_row"] = df["_source_row"].to_numpy()
    return records


def decode_each(
    positions: Iterable[int],
    sources: Iterable[T],
    load: Callable[[T], np.ndarray],
    errors: tuple[type[Exception], ...],
    empty_shape: tuple[int, ...],
) -> InputChunk:
    """Decode record by record: ``load(source)`` gives one input (float32, shape ``empty_shape``) or
    raises one of ``errors``, whose message is that record's quarantine reason."""
    ok: list[int] = []
    inputs: list[np.ndarray] = []
    failures: dict[int, str] = {}
    for pos, source in zip(positions, sources, strict=True):
        try:
            inputs.append(load(source))
        except errors as exc:
            failures[int(pos)] = str(exc)
            continue
        ok.append(int(pos))
    x = np.stack(inputs).astype(np.float32, copy=False) if inputs else np.empty((0, *empty_shape), dtype=np.float32)
    return InputChunk(ok_positions=np.asarray(ok, dtype=np.int64), x=x, failures=failures)

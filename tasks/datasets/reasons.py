"""Every reason a user sees about a raw row is worded here (design D4): quarantine reasons, decode failures,
repairs, and the errors that point at a row.

The rule these helpers enforce: a row is referred to by its ``source_file`` + line (which the
quarantine ledger stores beside the reason) and a patient only by its pseudonymous key. A reason never
quotes the value of an identifier column, nor a file name built from one (an image named after its
md5 hash, a WFDB record named after its ECG id, a folder named after the patient), nor an exception
message that may carry such a path. Adapters build their reasons with these functions instead of
formatting raw cells themselves; ``tests/datasets/test_ingest_as_downloaded.py`` ingests every adapter's
layout and scans everything the pipeline writes for the raw tables' identifier values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

WITHHELD = "an identifier (value withheld)"


def shown(value: Any, *, identifier: bool = False) -> str:
    """A cell as a reason quotes it: 'empty', the withheld marker for identifier columns, else repr."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return "empty"
    return WITHHELD if identifier else repr(value)


def shown_series(values: pd.Series, *, identifier: bool = False, max_chars: int | None = None) -> pd.Series:
    """``shown`` for each cell of ``values`` (strings, same index); ``max_chars`` truncates long values."""
    out = values.map(lambda v: shown(v, identifier=identifier)).astype(str)
    return out.str.slice(0, max_chars) if max_chars else out


def line_of(source_file: str, line: Any) -> str:
    """'<file> line <n>' (the 1-based line, header = 1); '?' when unknown."""
    return f"{source_file} line {'?' if line is None or pd.isna(line) else int(line)}"


def duplicate(column: str, what: str, first_line: pd.Series) -> pd.Series:
    """A later copy of a key: names the first row's line, never the key's value."""
    return f"{column}: the same {what} as line " + first_line.astype(str) + "; the first row is kept"


def unmatched(column: str, expected: str) -> str:
    """A cell that must become a file name but does not have the published form (value withheld)."""
    return f"{column}: expected {expected}, found {WITHHELD}"


def decode_failure(problem: str, path: Path | str | None = None) -> str:
    """A record whose input cannot be read. ``problem`` may come from a library exception; every
    spelling of ``path`` (full, name, stem) is removed from it, since the file's name or folders can
    embed the patient id. The quarantine row's source_file + line say which record it is."""
    text = str(problem)
    if path is not None:
        p = Path(path)
        # the parent folders too: CheXpert's patient<n>/, EMBED's <empi_anon>/, MIMIC-CXR's p<subject_id>/
        tokens = {str(p), str(p.resolve()), p.name, p.stem, *(part for part in p.parts[-4:-1] if len(part) > 3)}
        for token in sorted(tokens, key=len, reverse=True):
            text = text.replace(token, "<file>")
    return f"input file: {text}"


def exception_text(exc: BaseException, path: Path | str | None = None) -> str:
    """'<ExceptionType>: <message>' with ``path`` removed (see ``decode_failure``)."""
    return decode_failure(f"{type(exc).__name__}: {exc}", path).removeprefix("input file: ")


def vital_repair(column: str, rule: str, value: float, limits: Any, median: float, recorded: str = "") -> str:
    """A repaired vital sign (MIMIC-IV-ED benchmark rules): what it was, which limit, what it became.
    ``limits`` has outlier_low, valid_low, valid_high, outlier_high and unit; ``value`` is in that unit;
    ``recorded`` is how the file wrote it when the unit differs (temperature in °F)."""
    u = limits.unit
    column = f"{column} ({recorded} as recorded)" if recorded else column
    if rule == "outlier_to_missing":
        low = value < limits.outlier_low
        side = f"{'below' if low else 'above'} the outlier limit {limits.outlier_low if low else limits.outlier_high:g} {u}"
        return f"{column}: {value:.4g} {u} is {side}; set to missing, imputed with the training median {median:.4g} (benchmark rule)"
    bound = limits.valid_low if value < limits.valid_low else limits.valid_high
    valid = f"[{limits.valid_low:g}, {limits.valid_high:g}] {u}"
    return f"{column}: {value:.4g} {u} is outside the valid range {valid}; clipped to {bound:g} (benchmark rule)"

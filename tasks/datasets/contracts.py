"""Data contracts (design D2): YAML declarations in data_contracts/ turned into great-expectations suites.

A contract declares, per raw table, its columns (type, required/nullable, allowed values, range,
uniqueness) and the dataset's subgroup attributes with their category mapping (design D5). Validation
runs two great-expectations suites on a table read as strings: a *format* suite (types, nulls,
allowed values, uniqueness) and, after typing, a *range* suite. Row-level failures are returned for
quarantine with one reason per failed expectation; a missing column is a StructuralError.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from tasks.datasets.quarantine import Quarantine
from tasks.errors import StructuralError

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

_NUMBER_RE = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_INTEGER_RE = r"^\s*[+-]?\d+(\.0*)?\s*$"
_TRUE = {"true", "1", "1.0", "t", "yes"}
_FALSE = {"false", "0", "0.0", "f", "no"}


class ColumnContract(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["integer", "number", "string", "boolean"]
    required: bool = True  # the column must exist
    nullable: bool = False
    unique: bool = False
    allowed: list[str] | None = None
    min: float | None = None
    max: float | None = None
    description: str = ""


class TableContract(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    # Columns holding patient or record identifiers: a quarantine reason names the column but never
    # quotes the value, so raw ids cannot leak into result tables (design D4).
    identifiers: list[str] = Field(default_factory=list)
    columns: dict[str, ColumnContract]


class SubgroupContract(BaseModel):
    """How a subgroup attribute is derived from a raw column (design D5)."""

    model_config = ConfigDict(extra="forbid")
    column: str
    values: dict[str, str] | None = None  # exact value map
    contains: dict[str, str] | None = None  # substring map (upper-cased), first match wins
    bins: list[float] | None = None  # numeric cut points (left-closed)
    labels: list[str] | None = None
    default: str = "Other/Unknown"
    description: str = ""


class DatasetContract(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    description: str = ""
    tables: dict[str, TableContract]
    subgroups: dict[str, SubgroupContract] = Field(default_factory=dict)

    def map_subgroup(self, name: str, raw: pd.Series) -> pd.Series:
        """Normalise a raw column into the subgroup's categories (strings, never null)."""
        sg = self.subgroups[name]
        if sg.bins is not None:
            if sg.labels is None or len(sg.labels) != len(sg.bins):
                raise ValueError(f"contract {self.dataset}: subgroup {name!r} needs one label per bin start")
            edges = [*sg.bins, np.inf]
            cut = pd.cut(pd.to_numeric(raw, errors="coerce"), edges, right=False, labels=sg.labels)
            return cut.astype("object").where(cut.notna(), sg.default).astype(str)
        text = raw.astype("string").str.strip()
        out = pd.Series(sg.default, index=raw.index, dtype="object")
        if sg.values is not None:
            mapped = text.map(sg.values)
            out = mapped.where(mapped.notna(), out)
        if sg.contains is not None:
            upper = text.str.upper().fillna("")
            hit = pd.Series(False, index=raw.index)
            for needle, label in sg.contains.items():
                m = upper.str.contains(needle.upper(), regex=False) & ~hit
                out[m] = label
                hit |= m
        return out.astype(str)


def contracts_dir() -> Path:
    return Path(str(resources.files("data_contracts")))


@cache
def load_contract(name: str) -> DatasetContract:
    path = contracts_dir() / f"{name.replace('-', '_')}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no data contract for dataset {name!r} at {path}")
    return DatasetContract.model_validate(yaml.safe_load(path.read_text()))


@dataclass
class _Check:
    column: str
    expectation: Any
    reason: str


def _format_checks(table: TableContract, present: set[str]) -> list[_Check]:
    import great_expectations as gx

    E = gx.expectations
    checks: list[_Check] = []
    for col, spec in table.columns.items():
        if col not in present:
            continue
        if not spec.nullable:
            checks.append(_Check(col, E.ExpectColumnValuesToNotBeNull(column=col), "missing value"))
        if spec.type in ("number", "integer"):
            regex = _INTEGER_RE if spec.type == "integer" else _NUMBER_RE
            checks.append(
                _Check(
                    col,
                    E.ExpectColumnValuesToMatchRegex(column=col, regex=regex),
                    f"expected {'an integer' if spec.type == 'integer' else 'a number'}",
                )
            )
        if spec.type == "boolean":
            allowed = sorted({*(_TRUE | _FALSE), *(v.title() for v in _TRUE | _FALSE)})
            checks.append(_Check(col, E.ExpectColumnValuesToBeInSet(column=col, value_set=allowed), "expected a boolean (True/False/1/0)"))
        if spec.allowed is not None:
            checks.append(_Check(col, E.ExpectColumnValuesToBeInSet(column=col, value_set=spec.allowed), f"expected one of {spec.allowed}"))
        if spec.unique:
            checks.append(_Check(col, E.ExpectColumnValuesToBeUnique(column=col), "duplicate value (the id must be unique)"))
    return checks


def _range_checks(table: TableContract, present: set[str]) -> list[_Check]:
    import great_expectations as gx

    checks = []
    for col, spec in table.columns.items():
        if col in present and (spec.min is not None or spec.max is not None):
            checks.append(
                _Check(
                    col,
                    gx.expectations.ExpectColumnValuesToBeBetween(column=col, min_value=spec.min, max_value=spec.max),
                    f"expected a value in [{spec.min}, {spec.max}]",
                )
            )
    return checks


def _run_suite(df: pd.DataFrame, checks: list[_Check], suite_name: str) -> dict[int, list[tuple[str, str]]]:
    """Validate ``df`` with a GX suite; returns {row position: [(column, reason), ...]}."""
    if not checks or df.empty:
        return {}
    import great_expectations as gx

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = ctx.data_sources.add_pandas(f"{suite_name}_source")
    batch_def = source.add_dataframe_asset(f"{suite_name}_asset").add_batch_definition_whole_dataframe("all_rows")
    suite = gx.ExpectationSuite(name=suite_name)
    for check in checks:
        suite.add_expectation(check.expectation)
    frame = df.reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    failures: dict[int, list[tuple[str, str]]] = {}
    for check, res in zip(checks, result.results, strict=True):
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(f"great-expectations failed on column {check.column!r}: {res.exception_info.get('exception_message')}")
        for pos in res.result.get("unexpected_index_list") or []:
            failures.setdefault(int(pos), []).append((check.column, check.reason))
    return failures


def _to_bool(s: pd.Series) -> pd.Series:
    low = s.astype("string").str.strip().str.lower()
    return low.map(lambda v: True if v in _TRUE else (False if v in _FALSE else pd.NA)).astype("boolean")


def read_csv_as_strings(path: Path, **kwargs: Any) -> pd.DataFrame:
    """Read a CSV keeping every cell as text, with source file and 1-based line numbers attached.

    Encoding or delimiter problems become StructuralErrors naming the file.
    """
    if not path.exists():
        raise StructuralError(path, "file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], **kwargs)
    except UnicodeDecodeError as exc:
        raise StructuralError(path, f"not valid UTF-8 text near byte {exc.start}", expected="a UTF-8 encoded CSV") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise StructuralError(path, f"cannot be parsed as CSV: {exc}") from exc
    df["_source_file"] = path.name
    df["_source_row"] = np.arange(len(df), dtype=np.int64) + 2  # line 1 is the header
    return df


def validate_table(raw: pd.DataFrame, contract: DatasetContract, table_name: str, quarantine: Quarantine) -> pd.DataFrame:
    """Validate one raw table (all-string cells) against its contract.

    Returns the accepted rows with contract columns typed (Int64 / float64 / boolean / string);
    failing rows go to ``quarantine`` with every reason that applies. Raises StructuralError when a
    required column is missing.
    """
    table = contract.tables[table_name]
    present = set(raw.columns)
    missing = [c for c, spec in table.columns.items() if spec.required and c not in present]
    if missing:
        raise StructuralError(
            table_name,
            f"required column {missing[0]!r} is missing" + (f" (and {len(missing) - 1} more: {missing[1:]})" if len(missing) > 1 else ""),
            column=missing[0],
            expected=f"the columns of data_contracts/{contract.dataset.replace('-', '_')}.yaml",
        )
    raw = raw.reset_index(drop=True)
    bad = _run_suite(raw, _format_checks(table, present), f"{contract.dataset}_{table_name}_format")

    typed = raw.copy()
    for col, spec in table.columns.items():
        if col not in present:
            continue
        if spec.type == "number":
            typed[col] = pd.to_numeric(raw[col], errors="coerce").astype("float64")
        elif spec.type == "integer":
            typed[col] = pd.to_numeric(raw[col], errors="coerce").round().astype("Int64")
        elif spec.type == "boolean":
            typed[col] = _to_bool(raw[col])
        else:
            typed[col] = raw[col].astype("string")
    range_frame = typed[[c for c in typed.columns if c in table.columns and table.columns[c].type in ("number", "integer")]].astype(
        "float64"
    )
    for pos, items in _run_suite(range_frame, _range_checks(table, present), f"{contract.dataset}_{table_name}_range").items():
        bad.setdefault(pos, []).extend(items)

    for pos in sorted(bad):
        row = raw.iloc[pos]
        for col, reason in bad[pos]:
            value = row[col]
            found = "empty" if pd.isna(value) else ("an identifier (value withheld)" if col in table.identifiers else repr(value))
            quarantine.add(row["_source_file"], row["_source_row"], "contract", col, f"{col}: {reason}, found {found}")
    keep = np.ones(len(raw), dtype=bool)
    keep[list(bad)] = False
    return typed[keep].reset_index(drop=True)

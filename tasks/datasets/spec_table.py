"""Tables and cohort filters of a declarative dataset spec (tasks/datasets/spec.py).

* ``read_table_as_strings``: a CSV, TSV or Parquet file as all-string cells with ``_source_file`` and
  ``_source_row`` (1-based line, header = 1; for Parquet the row number + 1, so both read alike);
* ``Filter``: the cohort filter language. An expression is parsed with :mod:`ast` and only a small
  whitelist of nodes is accepted (column names, literals, comparisons, ``in``/``not in``, ``and``,
  ``or``, ``not``, ``is_missing(col)``); it is then evaluated column-wise on the frame. Nothing is
  ever passed to ``eval``: a name that is not a column and any call but ``is_missing`` are errors.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.datasets.contracts import read_csv_as_strings
from tasks.errors import ConfigError, StructuralError

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def table_format(path: str, declared: str | None) -> str:
    """csv | tsv | parquet: the declared format, else from the file suffix (``.gz`` ignored)."""
    if declared:
        return declared
    name = path.lower().removesuffix(".gz")
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    return "tsv" if name.endswith((".tsv", ".tab")) else "csv"


def read_table_as_strings(path: Path, fmt: str) -> pd.DataFrame:
    """All cells as text (missing = NA), plus _source_file (the file name) and _source_row."""
    if fmt in ("csv", "tsv"):
        return read_csv_as_strings(path, sep="," if fmt == "csv" else "\t")
    if not path.exists():
        raise StructuralError(path, "file not found")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged or non-Parquet file
        raise StructuralError(path, f"cannot be read as Parquet ({type(exc).__name__})", expected="a Parquet file") from exc
    out = pd.DataFrame({c: df[c].astype("string").str.strip().replace("", pd.NA).astype(object) for c in df.columns})
    out = out.where(out.notna(), None)
    out["_source_file"] = path.name
    out["_source_row"] = np.arange(len(out), dtype=np.int64) + 2  # as a CSV line: the header is line 1
    return out


class Filter:
    """A compiled cohort-filter expression; ``mask(df)`` is True for the rows that stay in the cohort.

    Numbers compare numerically (a cell that is not a number fails a numeric comparison); strings
    compare as text. A missing cell fails every comparison except ``is_missing``.
    """

    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise ConfigError(f"{where}: cannot parse filter {text!r} ({exc.msg})") from None
        self._check(tree.body)
        self.tree = tree.body

    @property
    def columns(self) -> list[str]:
        names = [n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name) and n.id != "is_missing"]
        return list(dict.fromkeys(names))

    def _fail(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(
            f"{self.where}: filter {self.text!r}: {what} at column {getattr(node, 'col_offset', 0) + 1} "
            "(allowed: column names, numbers, 'strings', lists, == != < <= > >=, in, not in, and, or, not, is_missing(column))"
        )

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._check(node.operand)
        elif isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                raise self._fail(node, "chained comparison")
            if not isinstance(node.left, ast.Name):
                raise self._fail(node.left, "the left side of a comparison must be a column name")
            right = node.comparators[0]
            if isinstance(node.ops[0], (ast.In, ast.NotIn)):
                if not isinstance(right, (ast.List, ast.Tuple)) or not all(self._literal(e) for e in right.elts):
                    raise self._fail(right, "'in' needs a list of literals")
            elif type(node.ops[0]) not in _COMPARE or not self._literal(right):
                raise self._fail(right, "a comparison needs a number or a 'string' on the right")
        elif isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id == "is_missing" and len(node.args) == 1 and not node.keywords):
                raise self._fail(node, "the only function is is_missing(column)")
            if not isinstance(node.args[0], ast.Name):
                raise self._fail(node.args[0], "is_missing takes a column name")
        else:
            raise self._fail(node, f"{type(node).__name__} is not allowed")

    @staticmethod
    def _literal(node: ast.AST) -> bool:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            node = node.operand
        return isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)) and not isinstance(node.value, bool)

    @staticmethod
    def _value(node: ast.AST) -> Any:
        if isinstance(node, ast.UnaryOp):
            return -node.operand.value  # type: ignore[attr-defined]
        return node.value  # type: ignore[attr-defined]

    def mask(self, df: pd.DataFrame) -> pd.Series:
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise ConfigError(f"{self.where}: filter {self.text!r} names column {missing[0]!r}, which no table has")
        return self._eval(self.tree, df).fillna(False).astype(bool)

    def _eval(self, node: ast.AST, df: pd.DataFrame) -> pd.Series:
        if isinstance(node, ast.BoolOp):
            parts = [self._eval(v, df) for v in node.values]
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if isinstance(node.op, ast.And) else (out | p)
            return out
        if isinstance(node, ast.UnaryOp):
            return ~self._eval(node.operand, df)
        if isinstance(node, ast.Call):
            return df[node.args[0].id].isna()  # type: ignore[attr-defined]
        assert isinstance(node, ast.Compare)
        col = df[node.left.id]  # type: ignore[attr-defined]
        op, right = node.ops[0], node.comparators[0]
        present = col.notna()
        if isinstance(op, (ast.In, ast.NotIn)):
            values = [self._value(e) for e in right.elts]  # type: ignore[attr-defined]
            hit = as_text(col).isin([_text(v) for v in values]) | as_number(col).isin([v for v in values if not isinstance(v, str)])
            return (hit if isinstance(op, ast.In) else ~hit) & present
        value = self._value(right)
        cmp = _COMPARE[type(op)]
        if isinstance(value, str):
            return pd.Series(cmp(as_text(col), value), index=df.index).fillna(False) & present
        num = as_number(col)
        return pd.Series(cmp(num, value), index=df.index).fillna(False) & num.notna()


def _text(v: Any) -> str:
    return v if isinstance(v, str) else format(v, "g")


def as_text(col: pd.Series) -> pd.Series:
    return col.astype("string").str.strip()


def as_number(col: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(col):
        return col.map({True: 1.0, False: 0.0}).astype("float64")
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return col.astype("float64")
    return pd.to_numeric(col.astype("string").str.strip(), errors="coerce").astype("float64")

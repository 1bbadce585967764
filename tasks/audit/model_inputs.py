"""What an audited model is fed (its input contract) and whether it fits, for `medaudit audit-model`.

Two contracts (docs/AUDIT_MODEL.md):

* ``features``: the dataset adapter's derived inputs, exactly as the snapshot stores them
  (`medaudit datasets --features D` lists names, order, units and imputation);
* ``columns``: named columns of the dataset's raw table, in the given order, read back from the raw
  files at each accepted record's ``source_file`` / ``source_row`` (works for any adapter whose
  records point into CSV files, spec-defined datasets included); empty cells imputed with the member
  records' mean (or 0); booleans as 0/1.

Either can be standardised with the member records' mean/std (``members``) or fed as is (``none``).
Plain functions (numpy, pandas, torch); no Prefect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.datasets.contracts import read_csv_as_strings
from tasks.errors import ConfigError, StructuralError

_BOOL = {"true": 1.0, "false": 0.0}


def _raw_file(raw_dir: Path, name: str) -> Path:
    """The raw file a record's ``source_file`` names (a bare name may sit in a sub-folder)."""
    direct = Path(raw_dir) / name
    if direct.exists():
        return direct
    found = sorted(Path(raw_dir).rglob(Path(name).name))
    if not found:
        raise StructuralError(Path(raw_dir) / name, "file not found (the records' source_file; input columns are read from it)")
    return found[0]


def raw_table_columns(raw_dir: Path, layout: tuple[str, ...]) -> dict[str, list[str]]:
    """Header of every CSV file of the dataset's layout: {file name: columns} (read without the data)."""
    out = {}
    for name in layout:
        path = Path(raw_dir) / name
        if path.suffix.lower() == ".csv" and path.exists():
            out[name] = list(pd.read_csv(path, nrows=0).columns)
    return out


def check_input_columns(columns: tuple[str, ...], raw_dir: Path, layout: tuple[str, ...], identifiers: set[str]) -> None:
    """Before ingest: every input column exists in a raw CSV of the layout and is no identifier."""
    headers = raw_table_columns(raw_dir, layout)
    if not headers:
        return  # the layout has no top-level CSV (e.g. a spec with nested tables): checked when read
    present = set().union(*headers.values())
    missing = [c for c in columns if c not in present]
    if missing:
        raise ConfigError(
            f"input columns {missing} are not columns of {', '.join(headers)}; the raw table has {len(present)} columns "
            f"(first: {sorted(present)[:8]}...)"
        )
    ids = [c for c in columns if c in identifiers]
    if ids:
        raise ConfigError(f"input columns {ids} are identifiers of the dataset's contract; a model input must not be one")


def raw_column_inputs(records: pd.DataFrame, raw_dir: Path, columns: tuple[str, ...]) -> np.ndarray:
    """The named raw columns of every snapshot record: float64 (N, K), NaN where the cell is empty.

    ``records``: the snapshot's records (source_file, source_row = 1-based line, header = line 1).
    A cell that is neither a number nor true/false raises a StructuralError naming file, column and line.
    """
    out = np.full((len(records), len(columns)), np.nan)
    files = records["source_file"].astype(str).to_numpy()
    lines = records["source_row"].to_numpy(dtype=np.int64)
    for name in pd.unique(files):
        path = _raw_file(raw_dir, name)
        raw = read_csv_as_strings(path, usecols=lambda c: c in set(columns))
        absent = [c for c in columns if c not in raw.columns]
        if absent:
            raise StructuralError(path, "missing column", column=absent[0], expected=f"the model's input columns {list(columns)}")
        sel = np.flatnonzero(files == name)
        pos = lines[sel] - 2
        if (pos < 0).any() or (pos >= len(raw)).any():
            raise StructuralError(path, "has fewer lines than the snapshot records point to; was the raw file changed after ingest?")
        for k, col in enumerate(columns):
            cells = raw[col].iloc[pos]
            text = cells.str.strip().str.lower()
            num = pd.to_numeric(cells, errors="coerce").where(~text.isin(_BOOL), text.map(_BOOL))
            bad = num.isna() & cells.notna()
            if bad.any():
                line = int(lines[sel][np.flatnonzero(bad.to_numpy())[0]])
                raise StructuralError(path, "not a number", column=col, row=line, expected="a numeric or true/false model input")
            out[sel, k] = num.to_numpy(dtype=np.float64)
    return out


def prepare_inputs(x: np.ndarray, member: np.ndarray, *, imputation: str, standardization: str, tabular: bool) -> np.ndarray:
    """Impute NaN cells (member mean or 0) and standardise with the member records' mean/std: float32, x's shape."""
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        fill = np.nan_to_num(np.nanmean(x[member], axis=0)) if imputation == "member_mean" else np.zeros(x.shape[1:])
        x = np.where(np.isnan(x), fill, x)
    if standardization == "members" and tabular:
        mu, sd = x[member].mean(axis=0), x[member].std(axis=0)
        x = (x - mu) / np.where(sd > 0, sd, 1.0)
    return x.astype(np.float32)


def first_layer_width(model: nn.Module) -> int | None:
    """The input width the model's first 2-D weight expects (a Linear's in_features), if it has one."""
    try:
        for _name, p in model.named_parameters():
            if p.ndim == 2:
                return int(p.shape[1])
            if p.ndim > 2:
                return None  # a conv net: no single width
    except (RuntimeError, AttributeError):
        return None
    return None


def check_model_fits(model: nn.Module, input_shape: tuple[int, ...], n_outputs: int, contract: str, source: str) -> None:
    """Run the model on one batch of zeros (2, *input_shape) before any work: a model built for
    another input width, or with another number of outputs, is refused with expected vs given."""
    width = int(np.prod(input_shape))
    expected = first_layer_width(model)
    if expected is not None and len(input_shape) == 1 and expected != width:
        raise ConfigError(
            f"{source}: the model expects inputs of width {expected} (its first layer), the input contract gives {width} "
            f"({contract}); name the columns it was trained on with --input-columns, or check `medaudit datasets --features`"
        )
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *input_shape), dtype=torch.float32))
    except Exception as exc:  # TorchScript / export errors come in many types
        msg = " ".join(str(exc).split())
        raise ConfigError(
            f"{source}: the model cannot be run on inputs of shape {tuple(input_shape)} ({contract})"
            + (f"; its first layer expects width {expected}" if expected is not None else "")
            + f": {type(exc).__name__}: {msg[-400:]}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != n_outputs:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        hint = " (a two-class head for a binary task: export its logits and give --logit-columns NEG,POS)" if n_outputs == 1 else ""
        raise ConfigError(f"{source}: the model returns {shape} for a batch of 2, the dataset's task needs ({2}, {n_outputs}){hint}")

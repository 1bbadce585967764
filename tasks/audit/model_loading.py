"""Reading an existing model, its exported logits and its training set for `medaudit audit-model`.

Plain functions (torch, pandas): the flow in flows/audit_model.py orchestrates them. Records are
matched by ``(source_file, source_row)``, the file name and row number every snapshot record keeps
(the same numbers quarantine reasons use); patients by their raw id, hashed with the installation's
secret exactly as at ingest, so no raw id is stored or printed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.config import ArchitectureSpec
from tasks.datasets.base import TaskSpec
from tasks.errors import ConfigError, StructuralError
from tasks.ingest.pseudonym import patient_keys

RECORD_KEY = ("source_file", "source_row")


def file_digest(path: Path) -> str:
    """sha256 of a file (hex, 16 chars): which model / members file an audit saw."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a frame; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise StructuralError(path, "file not found")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        return pd.read_csv(path, low_memory=False)
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, ValueError) as exc:
        raise StructuralError(
            path, f"cannot be read as {'Parquet' if path.suffix.lower() in {'.parquet', '.pq'} else 'CSV'}: {exc}"
        ) from exc


def _record_positions(frame: pd.DataFrame, records: pd.DataFrame, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Row positions in ``records`` of each ``frame`` row, matched on (source_file, source_row): (positions (n,)
    int64, -1 where no accepted record matches; file lines (n,) of the frame rows, header = line 1).

    ``source_file`` may be given as a bare file name; the snapshot's may carry folders.
    """
    rows = pd.to_numeric(frame["source_row"], errors="coerce")
    snap = pd.DataFrame(
        {
            "file": records["source_file"].astype(str).map(lambda s: Path(s).name).to_numpy(),
            "row": records["source_row"].to_numpy(dtype=np.int64),
            "pos": np.arange(len(records)),
        }
    )
    if snap.duplicated(["file", "row"]).any():
        snap = snap.drop_duplicates(["file", "row"], keep=False)  # ambiguous keys match nothing
    want = pd.DataFrame({"file": frame["source_file"].astype(str).map(lambda s: Path(s).name).to_numpy(), "row": rows.astype(np.int64)})
    merged = want.merge(snap, on=["file", "row"], how="left", sort=False)
    return merged["pos"].fillna(-1).to_numpy(dtype=np.int64), np.arange(len(frame)) + 2


def _check_record_columns(frame: pd.DataFrame, path: Path) -> None:
    for col in RECORD_KEY:
        if col not in frame.columns:
            raise StructuralError(path, "missing column", column=col, expected="source_file and source_row of each record")
    rows = pd.to_numeric(frame["source_row"], errors="coerce")
    bad = rows.isna() | (rows != rows.round())
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise StructuralError(path, "not an integer row number", column="source_row", row=first + 2, expected="the raw file's row number")


def parse_members(path: Path) -> pd.DataFrame:
    """Read and check a members file before ingest: a ``patient_id`` column without empty cells, or
    ``source_file`` + integer ``source_row`` columns."""
    path = Path(path)
    frame = read_table(path)
    if "patient_id" in frame.columns:
        ids = frame["patient_id"]
        if ids.isna().any():
            raise StructuralError(path, "empty patient id", column="patient_id", row=int(np.flatnonzero(ids.isna().to_numpy())[0]) + 2)
    elif all(c in frame.columns for c in RECORD_KEY):
        _check_record_columns(frame, path)
    else:
        raise StructuralError(
            path, "missing column", column="patient_id", expected="a patient_id column, or source_file and source_row columns"
        )
    if frame.empty:
        raise StructuralError(path, "lists no member")
    return frame


@dataclass
class Members:
    """The audited model's members among the snapshot records.

    member: bool (N,); excluded_lines: file lines of the members file naming no accepted patient/record
    (quarantined at ingest, e.g. the cohort filter, or not in this dataset); n_rows: rows of the file."""

    member: np.ndarray
    excluded_lines: list[int]
    n_rows: int
    by_patient: bool = True

    def warning(self, path: Path) -> str | None:
        if not self.excluded_lines:
            return None
        return (
            f"{path}: {len(self.excluded_lines)} of {self.n_rows} members name no accepted {'patient' if self.by_patient else 'record'} "
            f"(file lines {self.excluded_lines[:10]}{' ...' if len(self.excluded_lines) > 10 else ''}); left out: quarantined at "
            "ingest (see the snapshot's quarantine, e.g. the cohort filter) or not in this dataset version"
        )


def match_members(frame: pd.DataFrame, path: Path, records: pd.DataFrame, dataset: str, secret: bytes) -> Members:
    """Membership of every snapshot record in the audited model's training set.

    ``frame`` as from :func:`parse_members`: raw patient ids (every record of those patients is a
    member; hashed with the installation's secret as at ingest) or records. Rows naming nothing accepted
    are left out and reported by line (never by id); none matching at all is an error."""
    path = Path(path)
    member = np.zeros(len(records), dtype=bool)
    if "patient_id" in frame.columns:
        keys = pd.Series(patient_keys(frame["patient_id"].astype(str), dataset, secret))
        known = keys.isin(set(records["patient_key"])).to_numpy()
        member[records["patient_key"].isin(set(keys[known])).to_numpy()] = True
        by_patient = True
    else:
        pos, _ = _record_positions(frame, records, path)
        known = pos >= 0
        member[pos[known]] = True
        by_patient = False
    lines = (np.flatnonzero(~known) + 2).tolist()
    if not known.any():
        raise StructuralError(
            path,
            f"{len(lines)} of {len(frame)} {'patient ids are not patients' if by_patient else 'rows name no accepted record'} of this "
            f"dataset version (file lines {lines[:5]}); check the dataset, or whether they were quarantined at ingest",
            column="patient_id" if by_patient else "source_file/source_row",
        )
    if member.all():
        raise StructuralError(path, "every record is a member: an audit needs non-members to compare with")
    return Members(member=member, excluded_lines=lines, n_rows=len(frame), by_patient=by_patient)


@dataclass
class ParsedLogits:
    """A logits file read and checked before ingest: keys (source_file, source_row), view (n,), values (n, C)."""

    path: Path
    keys: pd.DataFrame
    view: np.ndarray
    values: np.ndarray
    note: str


def _as_binary_logit(two: np.ndarray, cols: list[str]) -> tuple[np.ndarray, str]:
    """A two-class head (n, 2) [NEG, POS] as the binary logit (n, 1): POS - NEG for logits, log(POS / NEG)
    for softmax probabilities (rows in [0, 1] summing to 1)."""
    finite = np.isfinite(two).all(axis=1)
    probs = finite.any() and (two[finite] >= 0).all() and (two[finite] <= 1).all() and np.allclose(two[finite].sum(axis=1), 1, atol=1e-3)
    if probs:
        p = np.clip(two.astype(np.float64), 1e-12, 1.0)
        return (np.log(p[:, 1]) - np.log(p[:, 0]))[:, None].astype(np.float32), f"softmax probabilities {cols}: log({cols[1]}/{cols[0]})"
    return (two[:, 1] - two[:, 0])[:, None], f"two-class logits {cols}: {cols[1]} - {cols[0]}"


def parse_logits(path: Path, task: TaskSpec, n_views: int, logit_columns: tuple[str, ...] | None = None) -> ParsedLogits:
    """Read and check an exported logits file completely, before ingest.

    Columns: source_file, source_row, the logit columns (``logit_columns`` in the task's label order,
    default logit_0..logit_{C-1}) and, for V > 1 views, ``view`` (0..V-1). For a binary task, two named
    columns NEG,POS are a two-class head (logits or softmax probabilities) and become one logit; an
    unnamed ``logit_1`` next to ``logit_0`` is refused, as it is ambiguous. Non-numeric cells are an error
    naming column and line; non-finite values are kept (the score transform flags them)."""
    path = Path(path)
    frame = read_table(path)
    _check_record_columns(frame, path)
    c = task.n_outputs
    cols = list(logit_columns) if logit_columns else [f"logit_{k}" for k in range(c)]
    if not logit_columns and c == 1 and "logit_1" in frame.columns:
        raise StructuralError(
            path,
            "has logit_0 and logit_1 for a binary task with one output; a two-class head is read only when named: "
            "--logit-columns logit_0,logit_1 (NEG,POS: the logit POS - NEG, or log(POS/NEG) for softmax probabilities), "
            "or --logit-columns logit_0 if logit_0 alone is the positive class's logit",
            column="logit_1",
        )
    if len(cols) != c and not (c == 1 and len(cols) == 2):
        raise ConfigError(f"--logit-columns names {len(cols)} columns, the task has {c} outputs ({', '.join(task.label_names)})")
    for col in cols:
        if col not in frame.columns:
            raise StructuralError(path, "missing column", column=col, expected=f"{len(cols)} logit columns {cols}")
    values = np.empty((len(frame), len(cols)), dtype=np.float32)
    for k, col in enumerate(cols):
        v = pd.to_numeric(frame[col], errors="coerce")
        bad = v.isna() & frame[col].notna() & ~frame[col].astype(str).str.lower().isin({"nan", "inf", "-inf", "infinity", "-infinity"})
        if bad.any():
            raise StructuralError(
                path, "not a number", column=col, row=int(np.flatnonzero(bad.to_numpy())[0]) + 2, expected="a float logit"
            )
        values[:, k] = v.to_numpy(dtype=np.float32, na_value=np.nan)
    note = f"columns {cols}"
    if len(cols) == 2 and c == 1:
        values, note = _as_binary_logit(values, cols)
    view = np.zeros(len(frame), dtype=np.int64)
    if "view" in frame.columns:
        view = pd.to_numeric(frame["view"], errors="coerce").fillna(-1).to_numpy(dtype=np.int64)
        if ((view < 0) | (view >= n_views)).any():
            row = int(np.flatnonzero((view < 0) | (view >= n_views))[0]) + 2
            raise StructuralError(path, "view out of range", column="view", row=row, expected=f"0..{n_views - 1}")
    dup = frame[list(RECORD_KEY)].assign(view=view).astype(str).duplicated()
    if dup.any():
        raise StructuralError(
            path, "a record appears twice (same view)", column="source_file/source_row", row=int(np.flatnonzero(dup.to_numpy())[0]) + 2
        )
    return ParsedLogits(path=path, keys=frame[list(RECORD_KEY)], view=view, values=values, note=note)


def align_logits(parsed: ParsedLogits, records: pd.DataFrame, n_views: int, *, allow_missing: bool = False) -> tuple[np.ndarray, int]:
    """Logits aligned to the snapshot: (float32 (N, V, C), NaN for records not in the file; records missing).

    Rows naming no accepted record are an error (by file line); records without a row are an error unless
    ``allow_missing``."""
    path = parsed.path
    pos, lines = _record_positions(parsed.keys, records, path)
    extra = pos < 0
    if extra.any():
        raise StructuralError(
            path,
            f"{int(extra.sum())} of {len(pos)} rows name no accepted record of this dataset version "
            f"(file lines {lines[extra][:5].tolist()}); "
            "records quarantined at ingest cannot be audited: drop those rows",
            column="source_file/source_row",
        )
    out = np.full((len(records), n_views, parsed.values.shape[1]), np.nan, dtype=np.float32)
    out[pos, parsed.view] = parsed.values
    if n_views > 1 and not (parsed.view > 0).any():
        out[:, 1:] = out[:, :1]  # a file without views gives view 0 only, repeated
    given = np.zeros(len(records), dtype=bool)
    given[pos] = True
    n_missing = int((~given).sum())
    if n_missing and not allow_missing:
        first = records["source_row"].to_numpy()[~given][:5].tolist()
        raise StructuralError(
            path,
            f"has no logits for {n_missing} of {len(records)} accepted records (raw-file lines {first} ...); "
            "export every record, or give --allow-missing to audit without them (they are counted in the headline)",
        )
    return out, n_missing


def read_logits(
    path: Path,
    records: pd.DataFrame,
    task: TaskSpec,
    n_views: int,
    *,
    logit_columns: tuple[str, ...] | None = None,
    allow_missing: bool = False,
) -> np.ndarray:
    """Exported logits aligned to the snapshot: float32 (N, V, C) (see :func:`parse_logits`, :func:`align_logits`)."""
    return align_logits(parse_logits(path, task, n_views, logit_columns), records, n_views, allow_missing=allow_missing)[0]


class _Exported(nn.Module):
    """An exported program's module refuses .eval()/.train() (it has no modes); this one ignores them."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.inner = module

    def train(self, mode: bool = True) -> _Exported:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def load_model(path: Path, task: TaskSpec, architecture: dict[str, Any] | None, device: str = "cpu") -> nn.Module:
    """The audited model, in eval mode.

    A TorchScript file (``torch.jit.script`` / ``trace``), a ``torch.export`` archive (``.pt2``), or
    with ``architecture`` ({"name", "params"} of the registry) a state dict, bare or inside
    {"state_dict": ...} / {"model": ...}. Errors name the file and what did not fit.
    """
    path = Path(path)
    if not path.exists():
        raise StructuralError(path, "file not found")
    if architecture is None:
        if path.suffix == ".pt2":  # torch.export archive
            try:
                return _Exported(torch.export.load(str(path)).module()).to(device)
            except Exception as exc:
                raise ConfigError(f"{path}: not a torch.export program ({type(exc).__name__}: {exc})") from exc
        try:
            return torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"{path}: not a TorchScript model ({str(exc).splitlines()[0]}); for a state dict give --arch with the registry architecture"
            ) from exc
    from models import build_model

    try:
        state = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:  # pickle / zip errors of many kinds
        raise ConfigError(f"{path}: cannot be read as a state dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    elif isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    model = build_model(architecture["name"], task.input_shape, task.n_outputs, task.modality, **architecture.get("params", {}))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = "; ".join(str(exc).splitlines()[1:3]).strip()
        raise ConfigError(f"{path}: does not fit architecture {architecture['name']} {architecture.get('params', {})}: {first}") from exc
    return model.to(device).eval()


def contract_of(target: dict[str, Any], task: TaskSpec, dataset: str) -> tuple[tuple[int, ...], str]:
    """(input shape, description) of the audited model's input contract (``target``: AuditedModelConfig as a dict)."""
    cols = target.get("input_columns")
    std = target.get("input_standardization", "members")
    std_text = "standardised with the members' mean/std" if std == "members" and task.modality == "tabular" else "not standardised"
    if cols:
        return (len(cols),), f"{len(cols)} raw columns of the dataset table, {std_text}"
    return tuple(task.input_shape), f"medaudit's derived features of {dataset}, {std_text}; see `medaudit datasets --features {dataset}`"


def preflight_model(target: dict[str, Any], task: TaskSpec, dataset: str) -> str:
    """Before ingest: load the audited model and run it on one batch of its contract's input shape.
    Returns the contract's description; raises ConfigError with expected vs given width."""
    from tasks.audit.model_inputs import check_model_fits

    arch = target.get("architecture")
    model = load_model(Path(target["model_path"]), task, ArchitectureSpec.model_validate(arch).model_dump() if arch else None)
    shape, text = contract_of(target, task, dataset)
    check_model_fits(model, shape, task.n_outputs, text, str(target["model_path"]))
    return text


def check_logits(logits: np.ndarray, task: TaskSpec, source: str) -> None:
    """A model's output must be (N, V, C) for this dataset's C outputs."""
    if logits.ndim != 3 or logits.shape[2] != task.n_outputs:
        raise ConfigError(f"{source}: the model returns {logits.shape[1:]} outputs per record, the dataset's task needs {task.n_outputs}")


def score_target_model(
    model_path: str, snapshot_dir: str, member: np.ndarray, target: dict[str, Any], n_views: int, seed: int, raw_dir: str | None = None
) -> np.ndarray:
    """Load the audited model and score every snapshot record on its input contract: float32 (N, V, C).

    ``target``: the AuditedModelConfig as a dict (architecture, input_columns, input_imputation,
    input_standardization); ``raw_dir``: where raw input columns are read from.
    """
    from tasks.audit.model_inputs import prepare_inputs, raw_column_inputs
    from tasks.ingest.snapshot import Snapshot
    from tasks.training.shadow import score_model

    snap = Snapshot.open(Path(snapshot_dir))
    task = snap.task
    model = load_model(Path(model_path), task, target.get("architecture"))
    member = np.asarray(member, dtype=bool)
    cols = target.get("input_columns")
    x = raw_column_inputs(snap.records, Path(raw_dir), tuple(cols)) if cols else snap.inputs()
    x = prepare_inputs(
        x,
        member,
        imputation=target.get("input_imputation", "member_mean"),
        standardization=target.get("input_standardization", "members"),
        tabular=task.modality == "tabular" or bool(cols),
    )
    try:
        logits = score_model(model, x, task, n_views, seed)
    except RuntimeError as exc:
        raise ConfigError(f"{model_path}: scoring failed on inputs of shape {x.shape[1:]}: {' '.join(str(exc).split())[-400:]}") from exc
    check_logits(logits, snap.task, str(model_path))
    return logits

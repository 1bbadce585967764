"""Reading an existing model, its exported logits and its training set for `medaudit audit-model`.

Plain functions (torch, pandas): the flow in flows/audit_model.py orchestrates them. Records are
matched by ``(source_file, source_row)``, the file name and row number every snapshot record keeps
(the same numbers quarantine reasons use); patients by their raw id, hashed with the installation's
secret exactly as at ingest, so no raw id is stored or printed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.datasets.base import TaskSpec
from tasks.errors import ConfigError, StructuralError
from tasks.pseudonym import patient_keys

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


def _record_positions(frame: pd.DataFrame, records: pd.DataFrame, path: Path) -> np.ndarray:
    """Row positions in ``records`` of each ``frame`` row, matched on (source_file, source_row).

    ``source_file`` may be given as a bare file name; the snapshot's may carry folders. Rows that match
    no record raise a StructuralError naming the first few (file row numbers, never identifiers).
    """
    for col in RECORD_KEY:
        if col not in frame.columns:
            raise StructuralError(path, "missing column", column=col, expected="source_file and source_row of each record")
    rows = pd.to_numeric(frame["source_row"], errors="coerce")
    bad = rows.isna() | (rows != rows.round())
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise StructuralError(path, "not an integer row number", column="source_row", row=first + 2, expected="the raw file's row number")
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
    missing = merged["pos"].isna().to_numpy()
    if missing.any():
        lines = (np.flatnonzero(missing)[:5] + 2).tolist()  # +2: header line, 1-based
        raise StructuralError(
            path,
            f"{int(missing.sum())} of {len(frame)} rows name no accepted record of this dataset version (file lines {lines}); "
            "records that were quarantined at ingest cannot be audited",
            column="source_file/source_row",
        )
    return merged["pos"].to_numpy(dtype=np.int64)


def read_members(path: Path, records: pd.DataFrame, dataset: str, secret: bytes) -> np.ndarray:
    """Membership of every snapshot record in the audited model's training set: bool (N,).

    ``path`` has a ``patient_id`` column (raw ids: every record of those patients is a member) or
    ``source_file`` + ``source_row`` columns (those records). Ids that match no patient are an error
    reporting how many and on which lines, never the ids themselves.
    """
    path = Path(path)
    frame = read_table(path)
    member = np.zeros(len(records), dtype=bool)
    if "patient_id" in frame.columns:
        ids = frame["patient_id"]
        if ids.isna().any():
            raise StructuralError(path, "empty patient id", column="patient_id", row=int(np.flatnonzero(ids.isna().to_numpy())[0]) + 2)
        keys = pd.Series(patient_keys(ids.astype(str), dataset, secret))
        known = keys.isin(set(records["patient_key"]))
        if not known.all():
            lines = (np.flatnonzero(~known.to_numpy())[:5] + 2).tolist()
            raise StructuralError(
                path,
                f"{int((~known).sum())} of {len(frame)} patient ids are not patients of this dataset version (file lines {lines}); "
                "check the dataset, or whether those patients were quarantined at ingest",
                column="patient_id",
            )
        member[records["patient_key"].isin(set(keys)).to_numpy()] = True
    elif all(c in frame.columns for c in RECORD_KEY):
        member[_record_positions(frame, records, path)] = True
    else:
        raise StructuralError(
            path, "missing column", column="patient_id", expected="a patient_id column, or source_file and source_row columns"
        )
    if not member.any():
        raise StructuralError(path, "lists no member")
    if member.all():
        raise StructuralError(path, "every record is a member: an audit needs non-members to compare with")
    return member


def read_logits(path: Path, records: pd.DataFrame, task: TaskSpec, n_views: int) -> np.ndarray:
    """Exported logits aligned to the snapshot: float32 (N, V, C), NaN for records not in the file.

    Columns: source_file, source_row, ``logit_0`` .. ``logit_{C-1}`` and, for V > 1 evaluation views,
    ``view`` (0..V-1; a file without it gives view 0 only, repeated). Non-numeric logits are an error
    naming column and line; non-finite values are kept (the score transform flags them).
    """
    path = Path(path)
    frame = read_table(path)
    cols = [f"logit_{c}" for c in range(task.n_outputs)]
    for col in cols:
        if col not in frame.columns:
            raise StructuralError(
                path, "missing column", column=col, expected=f"{task.n_outputs} logit columns logit_0..logit_{task.n_outputs - 1}"
            )
    values = np.empty((len(frame), len(cols)), dtype=np.float32)
    for c, col in enumerate(cols):
        v = pd.to_numeric(frame[col], errors="coerce")
        bad = v.isna() & frame[col].notna() & ~frame[col].astype(str).str.lower().isin({"nan", "inf", "-inf", "infinity", "-infinity"})
        if bad.any():
            raise StructuralError(
                path, "not a number", column=col, row=int(np.flatnonzero(bad.to_numpy())[0]) + 2, expected="a float logit"
            )
        values[:, c] = v.to_numpy(dtype=np.float32, na_value=np.nan)
    view = np.zeros(len(frame), dtype=np.int64)
    if "view" in frame.columns:
        view = pd.to_numeric(frame["view"], errors="coerce").fillna(-1).to_numpy(dtype=np.int64)
        if ((view < 0) | (view >= n_views)).any():
            row = int(np.flatnonzero((view < 0) | (view >= n_views))[0]) + 2
            raise StructuralError(path, "view out of range", column="view", row=row, expected=f"0..{n_views - 1}")
    pos = _record_positions(frame, records, path)
    dup = pd.DataFrame({"p": pos, "v": view}).duplicated()
    if dup.any():
        raise StructuralError(
            path, "a record appears twice (same view)", column="source_file/source_row", row=int(np.flatnonzero(dup)[0]) + 2
        )
    out = np.full((len(records), n_views, task.n_outputs), np.nan, dtype=np.float32)
    out[pos, view] = values
    if "view" not in frame.columns and n_views > 1:
        out[:, 1:] = out[:, :1]
    return out


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


def model_inputs(x: np.ndarray, member: np.ndarray, task: TaskSpec, standardization: str) -> np.ndarray:
    """The inputs the model sees: tabular inputs standardised with its members' mean/std, as
    medaudit's shadow models are (``standardization == "members"``), else unchanged."""
    if standardization != "members" or task.modality != "tabular":
        return x
    mu, sd = x[member].mean(axis=0), x[member].std(axis=0)
    return ((x - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def check_logits(logits: np.ndarray, task: TaskSpec, source: str) -> None:
    """A model's output must be (N, V, C) for this dataset's C outputs."""
    if logits.ndim != 3 or logits.shape[2] != task.n_outputs:
        raise ConfigError(f"{source}: the model returns {logits.shape[1:]} outputs per record, the dataset's task needs {task.n_outputs}")


def score_target_model(
    model_path: str, snapshot_dir: str, member: np.ndarray, target: dict[str, Any], n_views: int, seed: int
) -> np.ndarray:
    """Load the audited model and score every snapshot record: float32 (N, V, C).

    ``target``: the TargetModelConfig as a dict (architecture, input_standardization).
    """
    from tasks.snapshot import Snapshot
    from tasks.training import score_model

    snap = Snapshot.open(Path(snapshot_dir))
    model = load_model(Path(model_path), snap.task, target.get("architecture"))
    x = model_inputs(snap.inputs(), np.asarray(member, dtype=bool), snap.task, target.get("input_standardization", "members"))
    try:
        logits = score_model(model, x, snap.task, n_views, seed)
    except RuntimeError as exc:  # wrong input shape for this dataset, most often
        raise ConfigError(f"{model_path}: scoring failed on inputs of shape {x.shape[1:]}: {str(exc).splitlines()[0]}") from exc
    check_logits(logits, snap.task, str(model_path))
    return logits

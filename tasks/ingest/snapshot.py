"""Canonical, versioned Parquet snapshots of a dataset (design D1, D3, D4).

A snapshot folder ``<results>/snapshots/<dataset>/<version>/`` holds

* ``records.parquet``: record_idx, patient_key, split, y_<label>..., subgroup attributes,
  source_file, source_row (no raw patient id),
* ``inputs.parquet``: record_idx, x (fixed-size list of float32 = the flattened input),
* ``quarantine.parquet``: every excluded raw row or file with its stage and reason,
* ``repairs.parquet``: every cell changed while its row was kept (rule, original and repaired value),
* ``manifest.json``: task, counts, attribute names, input shape, version, and the digests of the
  quarantine and repairs ledgers.

The version is a content hash of records and inputs only, so an unchanged dataset gives the same
version and everything keyed by it is reused, even when only the rejected rows (or their reasons)
changed; the ledgers of such a re-ingest replace the stored ones and their digests say so. Inputs are
decoded and written chunk by chunk (bounded memory).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.datasets.base import DatasetAdapter, InputChunk, TaskSpec
from tasks.datasets.quarantine import Quarantine
from tasks.errors import MedauditError
from tasks.ingest.pseudonym import patient_keys, write_linkage
from tasks.results_layout import snapshots_dir

SNAPSHOT_FORMAT = 1
# A mapper runs decode jobs (possibly on Dask workers) and yields their results *in order*.
Mapper = Callable[[Callable[[pd.DataFrame], InputChunk], Iterable[pd.DataFrame]], Iterator[InputChunk]]


@dataclass(frozen=True)
class Snapshot:
    dataset: str
    version: str
    path: Path
    task: TaskSpec
    attributes: tuple[str, ...]
    n_raw: int | None
    n_accepted: int
    n_quarantined: int

    @cached_property
    def records(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "records.parquet")

    def inputs(self) -> np.ndarray:
        """All model inputs, float32 (N, *input_shape), rows in record_idx order."""
        col = pq.read_table(self.path / "inputs.parquet", columns=["x"]).column("x").combine_chunks()
        flat = col.values.to_numpy(zero_copy_only=False)
        return flat.reshape(len(col), *self.task.input_shape)

    def quarantine(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "quarantine.parquet")

    def repairs(self) -> pd.DataFrame:
        """The repairs ledger (empty for snapshots written before it existed)."""
        path = self.path / "repairs.parquet"
        return pd.read_parquet(path) if path.exists() else Quarantine().repairs_frame()

    def labels(self) -> np.ndarray:
        """(N, C) float64 label matrix in task.label_names order."""
        return self.records[label_columns(self.task)].to_numpy(dtype=np.float64)

    @classmethod
    def open(cls, path: Path) -> Snapshot:
        path = Path(path)
        m = json.loads((path / "manifest.json").read_text())
        task = TaskSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in m["task"].items()})
        return cls(m["dataset"], m["version"], path, task, tuple(m["attributes"]), m["n_raw"], m["n_accepted"], m["n_quarantined"])


def label_columns(task: TaskSpec) -> list[str]:
    return [f"y_{sanitize(n)}" for n in task.label_names]


def sanitize(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def _serial_map(fn: Callable[[pd.DataFrame], InputChunk], chunks: Iterable[pd.DataFrame]) -> Iterator[InputChunk]:
    return map(fn, chunks)


def build_snapshot(
    adapter: DatasetAdapter,
    raw_dir: Path,
    results_dir: Path,
    secret: bytes,
    *,
    chunk_size: int = 2048,
    mapper: Mapper | None = None,
    linkage_file: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Snapshot:
    """Ingest ``raw_dir`` with ``adapter`` into a content-addressed snapshot under ``results_dir``.

    Raises StructuralError for unreadable layouts and MedauditError if the raw rows do not reconcile
    with accepted + quarantined rows.
    """
    raw_dir = Path(raw_dir)
    quarantine = Quarantine()
    records = adapter.read_records(raw_dir, quarantine).reset_index(drop=True)
    missing = {"raw_patient_id", "split", "_source_file", "_source_row", *label_columns(adapter.task), *adapter.subgroup_attributes} - set(
        records.columns
    )
    if missing:
        raise MedauditError(f"adapter {adapter.name!r} did not produce columns {sorted(missing)}")

    out_root = snapshots_dir(results_dir, adapter.name)
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=out_root))
    try:
        width = int(np.prod(adapter.task.input_shape))
        schema = pa.schema([("record_idx", pa.int64()), ("x", pa.list_(pa.float32(), width))])
        hasher = hashlib.sha256()
        accepted: list[np.ndarray] = []
        n_done = 0
        chunks = (records.iloc[i : i + chunk_size] for i in range(0, len(records), chunk_size))
        decode = _DecodeJob(adapter, raw_dir)
        with pq.ParquetWriter(tmp / "inputs.parquet", schema) as writer:
            for chunk in (mapper or _serial_map)(decode, chunks):
                for pos, reason in sorted(chunk.failures.items()):
                    row = records.loc[pos]
                    quarantine.add(row["_source_file"], row["_source_row"], "decode", "input", reason)
                if len(chunk.ok_positions):
                    x = np.ascontiguousarray(chunk.x, dtype=np.float32).reshape(len(chunk.ok_positions), width)
                    if not np.isfinite(x).all():
                        raise MedauditError(f"adapter {adapter.name!r} produced non-finite inputs")
                    idx = np.arange(n_done, n_done + len(x), dtype=np.int64)
                    writer.write_table(
                        pa.table({"record_idx": idx, "x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), width)}, schema=schema)
                    )
                    hasher.update(x.tobytes())
                    accepted.append(np.asarray(chunk.ok_positions))
                    n_done += len(x)
                if progress:
                    progress(n_done + len(chunk.failures), len(records))
        keep = np.concatenate(accepted) if accepted else np.array([], dtype=np.int64)
        if len(keep) and (np.diff(keep) <= 0).any():
            raise MedauditError("decode chunks came back out of order")
        canon = records.loc[keep].reset_index(drop=True)
        keys = patient_keys(canon["raw_patient_id"], adapter.name, secret)
        if linkage_file is not None:
            write_linkage(Path(linkage_file), canon["raw_patient_id"], keys)
        canon = canon.drop(columns=["raw_patient_id"])
        canon.insert(0, "patient_key", keys)
        canon.insert(0, "record_idx", np.arange(len(canon), dtype=np.int64))
        canon = canon.rename(columns={"_source_file": "source_file", "_source_row": "source_row"})
        keep_cols = [
            "record_idx",
            "patient_key",
            "split",
            *label_columns(adapter.task),
            *adapter.subgroup_attributes,
            "source_file",
            "source_row",
        ]
        canon = canon[keep_cols]
        if canon.empty:
            raise MedauditError(f"{adapter.name}: no record survived validation; see the quarantine")
        hasher.update(pd.util.hash_pandas_object(canon, index=False).to_numpy().tobytes())
        hasher.update(json.dumps(dataclasses.asdict(adapter.task), sort_keys=True).encode())
        version = hasher.hexdigest()[:16]

        qframe = quarantine.frame()
        n_raw = adapter.n_raw_rows(raw_dir)
        if n_raw is not None and n_raw != len(canon) + len(qframe):
            raise MedauditError(
                f"{adapter.name}: {n_raw} raw rows but {len(canon)} accepted + {len(qframe)} quarantined; "
                "rows were lost without a reason (adapter bug)"
            )
        rframe = quarantine.repairs_frame()
        canon.to_parquet(tmp / "records.parquet", index=False)
        qframe.to_parquet(tmp / "quarantine.parquet", index=False)
        rframe.to_parquet(tmp / "repairs.parquet", index=False)
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "dataset": adapter.name,
            "version": version,
            "task": dataclasses.asdict(adapter.task),
            "attributes": adapter.subgroup_attributes,
            "n_raw": n_raw,
            "n_accepted": len(canon),
            "n_quarantined": len(qframe),
            "splits": canon["split"].value_counts().to_dict(),
            "n_patients": int(canon["patient_key"].nunique()),
            "n_repairs": len(rframe),
            "quarantine_digest": frame_digest(qframe),
            "repairs_digest": frame_digest(rframe),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        final = out_root / version
        if final.exists():
            _refresh_ledgers(final, tmp, manifest)
            shutil.rmtree(tmp)
        else:
            try:
                tmp.rename(final)
            except OSError:
                if not final.exists():
                    raise
                shutil.rmtree(tmp)  # a concurrent ingest of the same data renamed its identical copy first
        return Snapshot.open(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def frame_digest(frame: pd.DataFrame) -> str:
    """Content digest of a ledger frame (row order as stored)."""
    h = hashlib.sha256(json.dumps(list(frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _refresh_ledgers(final: Path, fresh: Path, manifest: dict) -> None:
    """Same accepted data, so the same version: keep its records and inputs, but take the new ingest's
    quarantine, repairs and manifest when they differ (a reason reworded, a rejected row fixed)."""
    old = json.loads((final / "manifest.json").read_text())
    if all(old.get(k) == manifest[k] for k in ("quarantine_digest", "repairs_digest", "n_raw", "n_quarantined")):
        return
    for name in ("quarantine.parquet", "repairs.parquet", "manifest.json"):
        (fresh / name).replace(final / name)  # same filesystem: each file is swapped atomically


@dataclass(frozen=True)
class _DecodeJob:
    """Picklable decode call so a mapper can ship it to Dask workers."""

    adapter: DatasetAdapter
    raw_dir: Path

    def __call__(self, chunk: pd.DataFrame) -> InputChunk:
        return self.adapter.decode_inputs(chunk, self.raw_dir)

"""Skip re-ingesting a raw folder that has not changed since its snapshot was built.

A snapshot's version is a content hash of what ingest *produced*, so finding it means ingesting
again (11 s for the synthetic ED table, far longer for image sets). The raw folder's fingerprint
(every file's relative path, size and mtime, plus a sha256 of the first and last 64 KiB of each
table-like file) together with what else shapes the result (adapter, its options, the pseudonym
secret, the adapter's and the snapshot builder's code, the contract) is recorded next to the
snapshots in ``raw_fingerprints.json``; an identical fingerprint reopens that snapshot.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path

from tasks.datasets.base import DatasetAdapter
from tasks.ingest.snapshot import SNAPSHOT_FORMAT, Snapshot
from tasks.results_layout import snapshots_dir

INDEX = "raw_fingerprints.json"
_EDGE = 1 << 16
_TABLE_SUFFIXES = {".csv", ".tsv", ".parquet", ".json", ".jsonl", ".txt", ".yaml", ".yml", ".gz", ".xlsx"}


def _edges(path: Path, size: int) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(_EDGE)
        if size > 2 * _EDGE:
            fh.seek(size - _EDGE)
        return head + fh.read(_EDGE)


def _code_text(obj: object) -> bytes:
    try:
        return Path(inspect.getfile(obj)).read_bytes()  # type: ignore[arg-type]
    except (TypeError, OSError):
        return b""


def raw_fingerprint(adapter: DatasetAdapter, raw_dir: Path, secret: bytes) -> str:
    """Fingerprint (hex) of ``raw_dir`` as ``adapter`` would ingest it with this ``secret``."""
    import tasks.ingest.snapshot

    raw_dir = Path(raw_dir)
    h = hashlib.sha256()
    meta = {
        "format": SNAPSHOT_FORMAT,
        "adapter": adapter.name,
        "options": dict(getattr(adapter, "options", {}) or {}),
        "secret": hashlib.sha256(secret).hexdigest(),
    }
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    h.update(_code_text(type(adapter)))
    h.update(_code_text(tasks.ingest.snapshot))
    try:
        h.update(adapter.contract.model_dump_json().encode())
    except Exception:  # an adapter without a contract file
        h.update(b"no-contract")
    for root, dirs, files in os.walk(raw_dir):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            st = path.stat()
            h.update(f"{path.relative_to(raw_dir)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            if path.suffix.lower() in _TABLE_SUFFIXES:
                h.update(_edges(path, st.st_size))
    return h.hexdigest()[:32]


def _index_path(results_dir: Path, dataset: str) -> Path:
    return snapshots_dir(results_dir, dataset) / INDEX


def cached_snapshot(results_dir: Path, dataset: str, fingerprint: str) -> Snapshot | None:
    """The snapshot recorded for ``fingerprint``, if it is still on disk."""
    index = _index_path(results_dir, dataset)
    try:
        version = json.loads(index.read_text()).get(fingerprint)
    except (OSError, ValueError):
        return None
    if not version:
        return None
    folder = index.parent / version
    if not (folder / "manifest.json").exists():
        return None
    return Snapshot.open(folder)


def remember(results_dir: Path, snapshot: Snapshot, fingerprint: str) -> None:
    """Record ``fingerprint`` -> ``snapshot.version`` (atomic replace; the last writer wins)."""
    index = _index_path(results_dir, snapshot.dataset)
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError):
        data = {}
    data[fingerprint] = snapshot.version
    tmp = index.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, index)


def snapshot_unless_unchanged(
    adapter: DatasetAdapter, raw_dir: Path, results_dir: Path, secret: bytes, build: Callable[[], Snapshot]
) -> tuple[Snapshot, bool]:
    """(snapshot, reused): the recorded snapshot of an unchanged raw folder, else ``build()`` and record it."""
    fp = raw_fingerprint(adapter, raw_dir, secret)
    snap = cached_snapshot(results_dir, adapter.name, fp)
    if snap is not None:
        return snap, True
    snap = build()
    remember(results_dir, snap, fp)
    return snap, False

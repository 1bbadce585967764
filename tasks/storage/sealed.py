"""Sealed results: owner-only files and folders, and the read-only, file-less connection of `medaudit sql`.

Results hold patient-level risks under pseudonymous keys, so everything medaudit writes (the results
database, reports, exports, the Prefect home) is owner-only: folders 0700, files 0600. The CLI sets the
process umask to 077 at start (children inherit it: Dask workers, served flow runs); the writer tightens
older files it owns; readers refuse a database that others can read, as tasks/ingest/pseudonym.py refuses the
secret.

`medaudit sql` opens DuckDB read-only with ``enable_external_access=false`` (no file, extension or
network access from SQL) and ``lock_configuration=true`` (no SQL ``SET`` can undo it). Statements are
classified before they run, so each way out gets one clear message instead of a Binder Error.

Imports only duckdb: `medaudit sql` must start fast (no numpy/pandas on its path).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from tasks.errors import MedauditError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
OWNER_ONLY_UMASK = 0o077

WAY_OUT = (
    "`medaudit sql` only reads the results database; it does not read or write files, attach databases, "
    "load extensions or change settings. Write a query's result with --csv FILE or --parquet FILE (owner-only)"
)
# Statement types that are queries; everything else is either a way out of the database or a write.
_QUERIES = {"SELECT", "EXPLAIN"}
_WAYS_OUT = {"COPY", "EXPORT", "ATTACH", "DETACH", "LOAD", "SET", "PRAGMA", "COPY_DATABASE", "VARIABLE_SET", "CALL", "EXTENSION"}


def seal_process() -> None:
    """Owner-only permissions for every file and folder this process (and its children) creates."""
    os.umask(OWNER_ONLY_UMASK)


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) owner-only; tighten it if it exists (it is medaudit's own folder)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, PRIVATE_DIR)
    return path


def make_private(path: Path) -> None:
    """Tighten an existing file medaudit wrote to 0600 (no-op when absent)."""
    path = Path(path)
    if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, PRIVATE_FILE)


def check_private(path: Path, what: str = "the results database") -> None:
    """Refuse a file others can read or write (like the patient-key secret), with the command that fixes it."""
    path = Path(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise MedauditError(
            f"{path}: {what} is readable by others (mode {mode:o}); run `chmod 600 {path}` (or rerun an audit, which seals it)"
        )


def open_private(path: Path, mode: str = "w") -> Any:
    """Open ``path`` for writing, created owner-only (0600) whatever the umask; replaces an existing file."""
    path = Path(path)
    path.unlink(missing_ok=True)  # a new inode: an existing world-readable file does not keep its mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    return os.fdopen(fd, mode)


def check_query(sql: str) -> None:
    """Refuse anything but one read-only query, each kind with its own clear message."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise MedauditError(f"query failed: {exc}") from exc
    if not statements:
        raise MedauditError('the query is empty (only blanks or comments): give one SELECT statement, e.g. "SELECT * FROM audit_history"')
    if len(statements) > 1:
        raise MedauditError(f"one statement at a time: the query holds {len(statements)}")
    kind = statements[0].type.name
    if kind in _QUERIES:
        return
    if kind in _WAYS_OUT:
        raise MedauditError(f"{kind} refused: {WAY_OUT}")
    raise MedauditError(f"the results database is read-only: {kind} statements are refused (only audits change it)")


def sealed_connection(db_path: Path) -> Any:
    """A read-only DuckDB connection with file, extension and network access disabled and settings locked."""
    import duckdb

    db_path = Path(db_path)
    if not db_path.exists():
        raise MedauditError(f"{db_path}: no audit database here (run an audit first)")
    check_private(db_path)
    try:
        return duckdb.connect(str(db_path), read_only=True, config={"enable_external_access": False, "lock_configuration": True})
    except duckdb.IOException as exc:
        raise MedauditError(f"{db_path}: cannot open the audit database ({exc})") from exc


def run_sealed(con: Any, sql: str) -> Any:
    """Execute one checked query on a sealed connection; a file function (read_csv, glob, ...) gets the same refusal."""
    import duckdb

    check_query(sql)
    try:
        return con.execute(sql)
    except duckdb.PermissionException as exc:
        raise MedauditError(f"file access refused: {WAY_OUT} ({str(exc).splitlines()[0]})") from exc
    except duckdb.Error as exc:
        raise MedauditError(f"query failed: {exc}") from exc

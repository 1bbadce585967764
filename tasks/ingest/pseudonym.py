"""Pseudonymous patient keys (design D4).

A patient key is HMAC-SHA256(secret, dataset + raw id), truncated to 20 hex characters. The
secret is created once per installation with owner-only permissions; the raw id never leaves
ingest. An optional linkage file (raw id -> key), also owner-only, lets a data steward re-identify.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Iterable
from hashlib import sha256
from pathlib import Path

import pandas as pd

SECRET_ENV = "MEDAUDIT_SECRET_FILE"


def secret_path() -> Path:
    if env := os.environ.get(SECRET_ENV):
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "medaudit" / "patient_key.secret"


def load_or_create_secret(path: Path | None = None) -> bytes:
    """Read the installation secret, creating it (mode 0600, folder 0700) on first use."""
    path = path or secret_path()
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path}: the patient-key secret is readable by others (mode {mode:o}); run `chmod 600 {path}`")
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def patient_keys(raw_ids: Iterable[object], dataset: str, secret: bytes) -> list[str]:
    """Map raw patient ids to pseudonymous keys; equal ids give equal keys within a dataset."""
    prefix = dataset.encode() + b"\x00"
    return [hmac.new(secret, prefix + str(raw).encode(), sha256).hexdigest()[:20] for raw in raw_ids]


def write_linkage(path: Path, raw_ids: pd.Series, keys: list[str]) -> None:
    """Write the raw id -> key table, owner-only (0600 in a 0700 folder)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    table = pd.DataFrame({"raw_patient_id": raw_ids.astype(str).to_numpy(), "patient_key": keys})
    table = table.drop_duplicates()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        table.to_csv(fh, index=False)
    os.replace(tmp, path)

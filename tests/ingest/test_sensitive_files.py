"""The key secret and the linkage file are owner-only; a readable secret is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from tasks.ingest.pseudonym import load_or_create_secret, patient_keys, write_linkage


def test_secret_is_created_owner_only_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "medaudit" / "patient_key.secret"
    secret = load_or_create_secret(path)
    assert len(secret) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert load_or_create_secret(path) == secret


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "patient_key.secret"
    load_or_create_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_secret(path)


def test_keys_are_keyed_and_linkage_is_owner_only(tmp_path: Path) -> None:
    a, b = load_or_create_secret(tmp_path / "a"), load_or_create_secret(tmp_path / "b")
    ids = ["10000001", "10000002", "10000001"]
    ka = patient_keys(ids, "mimic-iv-ed", a)
    assert ka[0] == ka[2] != ka[1]
    assert patient_keys(ids, "mimic-iv-ed", b) != ka  # another installation, other keys
    assert patient_keys(ids, "ptb-xl", a) != ka  # and another dataset
    assert not any(i in k for i in ids for k in ka)
    link = tmp_path / "steward" / "linkage.csv"
    write_linkage(link, pd.Series(ids), ka)
    assert link.stat().st_mode & 0o777 == 0o600
    assert link.parent.stat().st_mode & 0o777 == 0o700
    assert len(pd.read_csv(link)) == 2

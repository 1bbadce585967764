"""Session-wide isolation: a private patient-key secret, Prefect home and no telemetry."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION = Path(tempfile.mkdtemp(prefix="medaudit-tests-"))
os.environ["MEDAUDIT_SECRET_FILE"] = str(_SESSION / "secret" / "patient_key.secret")
os.environ["MEDAUDIT_HOME"] = str(_SESSION / "home")
os.environ["PREFECT_HOME"] = str(_SESSION / "home" / "prefect")

from flows.runtime import configure_prefect  # noqa: E402

configure_prefect(quiet=True)

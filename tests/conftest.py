"""Session-wide isolation: a private patient-key secret, Prefect home and no telemetry."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION = Path(tempfile.mkdtemp(prefix="medaudit-tests-"))
os.environ["MEDAUDIT_SECRET_FILE"] = str(_SESSION / "secret" / "patient_key.secret")
os.environ["MEDAUDIT_HOME"] = str(_SESSION / "home")
os.environ["PREFECT_HOME"] = str(_SESSION / "home" / "prefect")

import pytest  # noqa: E402

from flows.runtime import configure_prefect  # noqa: E402

configure_prefect(quiet=True)


# The longest end-to-end runs (a Prefect server and scheduler, a browser, an external Dask cluster,
# one audit per dataset layout, the DP and capacity trends, benchmark smoke runs) are `heavy`: the
# default run (README, CI) skips them to stay well under 20 minutes on 2 cores; `pytest -m heavy`
# runs them. The spine's end-to-end demo, the fault tests and every statistics test stay in the default run.
HEAVY = (
    "tests/ops/test_gate.py::test_gate_on_a_real_audit",
    "tests/ops/test_reaudit.py::test_reaudits_train_only_what_changed",
    "tests/ops/test_scale_out.py",
    "tests/ops/test_scheduled_reaudit.py",
    "tests/pipeline/test_demo_datasets.py",
    "tests/pipeline/test_dp_and_capacity.py::test_risk_falls_as_epsilon_falls",
    "tests/pipeline/test_dp_and_capacity.py::test_larger_architecture_exposes_more_patients",
    "tests/pipeline/test_scaling.py::test_scaling_trains_one_pool_per_architecture",
    "tests/pipeline/test_dp_sweep.py::test_dp_sweep_end_to_end",
    "tests/bench/",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(HEAVY):
            item.add_marker(pytest.mark.heavy)

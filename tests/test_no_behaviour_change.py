"""No behaviour change: a small pool audit and model audit store what they stored when the snapshot was
recorded (tests/fixtures/record_behaviour_snapshot.py): the same pool keys (so nothing retrains), the same
headlines, and every table and view with the same columns and rows."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tasks.storage.store import DEPRECATED_VIEWS

pytestmark = pytest.mark.slow

_SCRIPT = Path(__file__).parent / "fixtures" / "record_behaviour_snapshot.py"
_spec = importlib.util.spec_from_file_location("record_behaviour_snapshot", _SCRIPT)
assert _spec is not None and _spec.loader is not None
recorder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recorder)

# Floats are compared with rtol 1e-4 (atol 1e-6 near zero). The snapshot may be replayed on another x86 CPU,
# where torch's CPU kernels pick other vector widths and summation orders: float32 logits then differ in
# the last bits (relative ~1e-7), and the statistics built on them (AUCs from rank orders of near-equal
# scores, Gaussian fits, bootstrap intervals) amplify that by a few orders of magnitude at most. A real
# behaviour change (another transform, split, seed or statistic) moves these numbers by 1e-2 or more.
RTOL = 1e-4
ATOL = 1e-6
# Deliberate changes since the recording, each named with why; a recorded key listed here may be absent now.
REMOVED_KEYS = {
    "score_split": "PoolConfig.score_split was dead (never read, never in a pool key: tests/test_pool_keys_unchanged.py) and was removed",
}


def _diff(expected: Any, actual: Any, where: str, out: list[str]) -> None:
    """Appends to OUT one line per difference: keys, ints, bools and strings exactly, floats within RTOL."""
    if len(out) >= 20:
        return
    if isinstance(expected, dict) and isinstance(actual, dict):
        expected = {k: v for k, v in expected.items() if k in actual or k not in REMOVED_KEYS}
        if set(expected) != set(actual):
            out.append(f"{where}: keys {sorted(set(expected) ^ set(actual))} differ")
        for k in sorted(set(expected) & set(actual)):
            _diff(expected[k], actual[k], f"{where}.{k}", out)
    elif isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            out.append(f"{where}: {len(expected)} items recorded, {len(actual)} now")
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            _diff(e, a, f"{where}[{i}]", out)
    elif isinstance(expected, float) or isinstance(actual, float):
        ok = isinstance(expected, (int, float)) and isinstance(actual, (int, float)) and not isinstance(expected, bool)
        both_nan = ok and math.isnan(expected) and math.isnan(actual)
        if not (ok and (both_nan or math.isclose(expected, actual, rel_tol=RTOL, abs_tol=ATOL))):
            out.append(f"{where}: recorded {expected!r}, now {actual!r}")
    elif type(expected) is not type(actual) or expected != actual:
        out.append(f"{where}: recorded {expected!r}, now {actual!r}")


def test_diff_catches_a_perturbed_number_and_a_renamed_key() -> None:
    """The comparison can fail: a float off by 1e-3 relative, a changed string or a missing key is reported."""
    rec = {"t": {"columns": ["a", "b"], "rows": [[1, 0.5, "x"]]}}
    out: list[str] = []
    _diff(rec, {"t": {"columns": ["a", "b"], "rows": [[1, 0.5 * (1 + 1e-5), "x"]]}}, "", out)
    assert out == []
    _diff(rec, {"t": {"columns": ["a", "b"], "rows": [[1, 0.5 * (1 + 1e-3), "y"]]}}, "", out)
    _diff(rec, {"u": rec["t"]}, "", out)
    assert len(out) == 3 and "0.5" in out[0] and "'y'" in out[1] and "keys" in out[2]


def test_a_small_audit_stores_what_the_recorded_snapshot_holds(tmp_path: Path) -> None:
    recorded = json.loads(gzip.decompress(recorder.SNAPSHOT.read_bytes()))
    now = json.loads(json.dumps(recorder.snapshot(recorder.run_small_audit(tmp_path)), sort_keys=True, default=str))
    assert now["pool_keys"] == recorded["pool_keys"], "pool keys changed: every stored pool would retrain"
    # The model audit's target_* tables and views were renamed after the snapshot was recorded; the old names
    # remain as deprecated views. Both the new and the old name must hold what the old name held.
    expected = {**recorded["tables"], **{new: recorded["tables"][old] for old, new in DEPRECATED_VIEWS.items()}}
    assert set(now["tables"]) == set(expected), "tables or views added or removed"
    out: list[str] = []
    for name in sorted(expected):
        assert now["tables"][name]["columns"] == expected[name]["columns"], name
        _diff(expected[name]["rows"], now["tables"][name]["rows"], name, out)
    _diff(recorded["demo_headline"], now["demo_headline"], "demo headline", out)
    _diff(recorded["audit_model_headline"], now["audit_model_headline"], "audit-model headline", out)
    assert not out, "\n".join(out)

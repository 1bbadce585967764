from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from flows.commands.scaling import parse_archs

pytestmark = pytest.mark.slow


def test_parse_archs() -> None:
    assert parse_archs("mlp:width=16:depth=1,tabresnet") == [
        {"name": "mlp", "params": {"width": 16, "depth": 1}},
        {"name": "tabresnet", "params": {}},
    ]
    with pytest.raises(ValueError, match="key=value"):
        parse_archs("mlp:width")


@pytest.mark.heavy
def test_scaling_trains_one_pool_per_architecture(tmp_path: Path) -> None:
    args = ["scaling", "mimic-iv-ed", "--archs", "mlp:width=8:depth=1,mlp:width=256:depth=2", "--patients", "200"]
    assert main([*args, "--models", "6", "--targets", "2", "--results", str(tmp_path), "--no-progress", "--epochs", "10"]) == 0
    out = tmp_path / "reports" / "scaling" / "mimic-iv-ed"
    table = pd.read_csv(out / "scaling.csv")
    assert len(table) == 2 and table["pool_key"].nunique() == 2
    assert table["n_parameters"].is_monotonic_increasing
    assert (out / "scaling.png").stat().st_size > 0

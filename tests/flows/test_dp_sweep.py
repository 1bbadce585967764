from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from flows.commands.dp_sweep import parse_epsilons, parse_units
from tasks.audit.dp_sweep import dp_config
from tasks.config import AuditConfig
from tasks.errors import ConfigError
from tasks.report.dp_sweep import dp_sweep_plot
from tasks.risk.dp_bounds import auc_bound_from_epsilon_delta, max_auc_noise_limit


def test_parse_epsilons_and_units() -> None:
    assert parse_epsilons("1,5,10,100,1000,inf") == [1, 5, 10, 100, 1000, math.inf]
    assert parse_epsilons(" inf, 0.5 ,5,5,∞") == [0.5, 5, math.inf]
    assert parse_units("patient, record,patient") == ["patient", "record"]
    positive = "must be > 0"
    for bad, why in (("1,ten", "'ten'.*not a number"), ("0", positive), ("-1,5", positive), ("nan", positive), (" , ", "no epsilon")):
        with pytest.raises(ConfigError, match=f"--epsilons.*{why}"):
            parse_epsilons(bad)
    for bad in ("person", "record,group"):
        with pytest.raises(ConfigError, match=r"--units: .* is not a DP unit"):
            parse_units(bad)
    with pytest.raises(ConfigError, match="--units"):
        parse_units("")


def test_cli_reports_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for option, value in (("--epsilons", "1,abc"), ("--epsilons", "0,inf"), ("--units", "stay"), ("--clip-norm", "0")):
        assert main(["dp-sweep", "mimic-iv-ed", option, value, "--results", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert option in err and value.split(",")[-1] in err
    assert not (tmp_path / "demo_data").exists()  # rejected before any cohort is written


def test_inf_is_the_plain_pool(tmp_path: Path) -> None:
    base = AuditConfig(dataset="mimic-iv-ed", raw_dir=tmp_path)
    plain = dp_config(base, math.inf, "patient", 0.5)
    assert plain.pool.recipe == base.pool.recipe  # same recipe: the same pool key as an ordinary audit
    dp = dp_config(base, 5.0, "patient", 0.5).pool.recipe
    assert (dp.dp_epsilon, dp.dp_unit, dp.dp_clip_norm) == (5.0, "patient", 0.5)
    assert dp_config(base, 5.0, "record", None).pool.recipe.dp_clip_norm == base.pool.recipe.dp_clip_norm


def test_max_auc_noise_limit() -> None:
    n = np.full(400, 4)
    assert max_auc_noise_limit(1.0, n, n) == 1.0
    few = max_auc_noise_limit(0.7, n, n)
    many = max_auc_noise_limit(0.7, 8 * n, 8 * n)
    assert 0.7 < many < few <= 1.0  # more models per record: less estimation noise above the bound
    assert max_auc_noise_limit(0.7, 8 * n, 8 * n, seed=1) == pytest.approx(many, abs=0.02)


def test_plot_from_a_table(tmp_path: Path) -> None:
    rows = [
        {"unit": u, "target_epsilon": e, "auc_bound": b, "lira_auc_mean": 0.5 + e / 4000, "p99_record_auc": 0.8}
        | {"test_auroc_mean": 0.7, "test_auroc_std": 0.01, "pool_key": f"{u}{e}"}
        for u in ("record", "patient")
        for e, b in ((1, 0.73), (10, 0.9999), (1000, 1.0))
    ]
    rows.append({"unit": "none", "target_epsilon": math.inf, "auc_bound": 1.0, "lira_auc_mean": 0.62, "p99_record_auc": 0.97})
    rows[-1] |= {"test_auroc_mean": 0.8, "test_auroc_std": np.nan, "pool_key": "plain"}
    assert dp_sweep_plot(pd.DataFrame(rows), tmp_path / "p.png").stat().st_size > 10_000
    only_dp = pd.DataFrame(rows[:3])
    assert dp_sweep_plot(only_dp, tmp_path / "q.png").exists()


@pytest.mark.slow
@pytest.mark.heavy
def test_dp_sweep_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MEDAUDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDAUDIT_SECRET_FILE", str(tmp_path / "secret" / "patient_key.secret"))
    args = ["dp-sweep", "mimic-iv-ed", "--patients", "200", "--epsilons", "1,inf", "--units", "record,patient"]
    assert main([*args, "--models", "6", "--targets", "2", "--epochs", "2", "--results", str(tmp_path), "--no-progress"]) == 0
    out = tmp_path / "reports" / "dp_sweep" / "mimic-iv-ed"
    table = pd.read_csv(out / "dp_sweep.csv").set_index("unit")
    assert sorted(table.index) == ["none", "patient", "record"] and table["pool_key"].nunique() == 3
    assert (table["n_models"] == 6).all() and table["test_auroc_mean"].notna().all()
    dp = table.loc[["record", "patient"]]
    assert (dp["target_epsilon"] == 1.0).all()
    assert ((dp["epsilon_median"] - 1.0).abs() <= 0.02).all() and (dp["epsilon_max"] <= 1.01).all()
    # patient-level DP has fewer units (hence a larger default delta = 1/units); training keeps the expected
    # rows per step, so both units sample about the same share of their units
    assert dp.loc["patient", "n_units"] < dp.loc["record", "n_units"]
    assert dp["delta"].to_numpy() == pytest.approx(1 / dp["n_units"].to_numpy(), rel=0.05)
    assert dp.loc["patient", "sampling_rate"] == pytest.approx(dp.loc["record", "sampling_rate"], rel=0.1)
    assert ((dp["auc_bound"] > 0.5) & (dp["auc_bound"] <= 1.0)).all()
    for unit in ("record", "patient"):
        r = dp.loc[unit]
        assert r["auc_bound"] == pytest.approx(auc_bound_from_epsilon_delta(r["epsilon_median"], r["delta"]), abs=2e-3)
    plain = table.loc["none"]
    assert plain["target_epsilon"] == math.inf and plain["auc_bound"] == 1.0 and np.isnan(plain["noise_multiplier"])
    assert not plain["exceeds_bound"]
    assert (out / "dp_sweep.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "bound" in printed and str(out / "dp_sweep.csv") in printed


def test_few_models_can_never_flag_a_bound() -> None:
    """With 4 IN / 4 OUT models the estimated max AUC reaches 1.0 by chance: the limit sits within
    float noise of 1, and `exceeds_bound` needs more than 1e-6 above it (1.0 observed is no alarm)."""
    limit = max_auc_noise_limit(0.732, np.full(300, 4), np.full(300, 4))
    assert 1.0 - 1e-6 < limit <= 1.0  # so an observed 1.0 is not above limit + 1e-6

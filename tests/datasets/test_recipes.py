"""Recipe presets: `medaudit audit D DIR` trains the dataset's paper recipe, `--recipe quick` the CPU one,
flags and --config override them, the preset is recorded, and the demo's pools (and so their keys) are
exactly what they were before presets existed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from flows.cli import build_parser, main
from flows.options import build_config
from tasks.config import AuditConfig
from tasks.training.pool import pool_key_for

# The demo pools as they were written in tasks/synthetic/demo_pools.py before the presets (their keys must not change).
OLD_DEMO_POOLS = {
    "mimic-iv-ed": {
        "architecture": {"name": "mlp", "params": {"width": 128, "depth": 2}},
        "recipe": {"epochs": 40, "batch_size": 128, "learning_rate": 0.01, "weight_decay": 5e-4, "momentum": 0.9, "warmup_fraction": 0.05},
    },
    "ptb-xl": {
        "architecture": {"name": "resnet1d", "params": {"filters": 16}},
        "recipe": {"epochs": 20, "batch_size": 16, "learning_rate": 0.05},
    },
    "chexpert": {
        "architecture": {"name": "small_cnn", "params": {"width_multiplier": 0.25}},
        "recipe": {"epochs": 30, "batch_size": 32, "learning_rate": 0.05, "precision": "bf16", "channels_last": True},
        "eval_views": 2,
    },
}


def _cfg(*argv: str) -> AuditConfig:
    args = build_parser().parse_args(list(argv))
    if args.command == "demo":
        from tasks.synthetic.demo_pools import DEMO_RECIPE

        return build_config(args, args.dataset, Path("raw"), default_recipe=DEMO_RECIPE)
    return build_config(args, args.dataset, args.raw_dir)


def test_audit_trains_the_papers_recipe_by_default(tmp_path: Path) -> None:
    cfg = _cfg("audit", "chexpert", str(tmp_path))
    r = cfg.pool.recipe
    assert cfg.pool.architecture.name == "wrn_28_2" and cfg.pool.eval_views == 2
    assert (r.epochs, r.learning_rate, r.weight_decay, r.batch_size, r.ema_decay, r.grad_accum_steps, r.augment) == (
        60,
        1.0,
        1e-4,
        512,
        0.9995,
        2,
        "medium",
    )
    assert cfg.pool.recipe_preset == "paper"
    ed = _cfg("audit", "mimic-iv-ed", str(tmp_path)).pool
    assert ed.architecture.name == "tabresnet" and ed.architecture.params == {"width": 300, "blocks": 6}
    assert _cfg("audit", "ptb-xl", str(tmp_path)).pool.architecture.name == "resnet1d_128"


def test_quick_preset_with_overrides_is_recorded_as_modified(tmp_path: Path) -> None:
    pool = _cfg("audit", "ptb-xl", str(tmp_path), "--recipe", "quick", "--epochs", "3").pool
    assert pool.architecture.params == {"filters": 16} and pool.recipe.epochs == 3 and pool.recipe.learning_rate == 0.05
    assert pool.recipe_preset == "quick (modified)"
    config = tmp_path / "c.yaml"
    config.write_text("pool: {recipe: {epochs: 5, batch_size: 8}}\n")
    pool = _cfg("audit", "fitzpatrick", str(tmp_path), "--config", str(config)).pool
    # a --config recipe is the recipe as written (TrainRecipe defaults elsewhere), the paper's architecture stays
    assert pool.recipe.epochs == 5 and pool.recipe.ema_decay is None and pool.architecture.name == "wrn_28_2"


def test_demo_pools_and_keys_are_unchanged() -> None:
    snapshot = SimpleNamespace(version="v", task=SimpleNamespace(modality="image", score_transform="softmax_mass"))
    for dataset, old in OLD_DEMO_POOLS.items():
        new = _cfg("demo", "--dataset", dataset)
        before = AuditConfig.model_validate({"dataset": dataset, "raw_dir": "raw", "pool": old})
        assert new.pool.recipe_preset == "quick"
        assert pool_key_for(new, snapshot) == pool_key_for(before, snapshot)


def test_no_mlp_on_images_and_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a configuration that names no architecture gets the dataset's, never an MLP on images
    assert AuditConfig.model_validate({"dataset": "embed", "raw_dir": "raw"}).pool.architecture.name == "wrn_28_2"
    assert main(["audit", "chexpert", str(tmp_path), "--arch", "mlp"]) == 2
    assert "architecture 'mlp' is for ['tabular'] inputs; chexpert is image" in capsys.readouterr().err
    assert main(["audit", "chexpert", str(tmp_path), "--recipe", "fast"]) == 2
    assert "has no recipe preset 'fast'; its presets: paper, quick" in capsys.readouterr().err

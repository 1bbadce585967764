"""The `medaudit` commands' shared options: run options, ``--option KEY=VALUE``, and the AuditConfig they build.

Used by flows/cli.py and every module of flows/commands (which import this, never flows/cli.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tasks.results_layout import DEFAULT_RESULTS_DIR, demo_data_dir


def add_run_options(p: argparse.ArgumentParser, *, models_default: int | None) -> None:
    p.add_argument("--models", type=int, default=models_default, help="shadow models in the pool (even; default %(default)s)")
    p.add_argument("--targets", type=int, default=None, help="held-out target models for the aggregate attacks (even)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR, help="results folder (default ./results)")
    p.add_argument(
        "--dask-address", default=None, help="use an existing Dask scheduler (e.g. tcp://127.0.0.1:8786) instead of a LocalCluster"
    )
    p.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default 2)")
    p.add_argument("--config", type=Path, default=None, help="audit configuration file (YAML/JSON); options given here override it")
    p.add_argument("--seed", type=int, default=None, help="pool seed (masks and model seeds)")
    p.add_argument(
        "--recipe",
        default=None,
        help="the dataset's recipe preset: paper (its architecture and training in the paper, for GPUs) or quick (CPU-sized); "
        "default paper on real data, quick for synthetic cohorts; --arch, --epochs and --config values override it",
    )
    p.add_argument("--arch", default=None, help="architecture from `medaudit architectures` (default: the recipe preset's)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per shadow model")
    add_option_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_option_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dataset option (repeatable; see `medaudit datasets`), e.g. release_dir=CheXpert-v1.0-small; overrides --config's",
    )


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> {key: value}; values are read as YAML scalars (``64`` -> 64, ``[a, b]`` -> a list)."""
    import yaml

    from tasks.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE, e.g. --option release_dir=CheXpert-v1.0-small")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--option {item!r}: the value is not a YAML scalar or list ({exc.__class__.__name__})") from exc
    return out


def dataset_adapter(dataset: str, options: dict[str, Any]) -> Any:
    """The adapter of ``dataset`` with ``options`` (validated: an unknown option fails here, naming the known ones)."""
    from tasks.datasets import get_dataset

    return get_dataset(dataset, options)


def build_config(
    args: argparse.Namespace,
    dataset: str,
    raw_dir: Path,
    base_pool: dict[str, Any] | None = None,
    *,
    default_recipe: str | None = "paper",
    base_options: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> Any:
    """One AuditConfig from the command line: the dataset's recipe preset (``--recipe``, else
    ``default_recipe``) under the --config file's pool, under ``base_pool`` (what the command itself
    sets), under --models/--arch/--epochs/... (tasks/datasets/recipes.py::compose_pool); dataset options:
    ``base_options`` < --config < --option. ``data``: the --config file already read (audit-model takes its
    ``target`` section out first)."""
    from models import get_architecture
    from tasks.config import AuditConfig
    from tasks.datasets.recipes import compose_pool
    from tasks.errors import ConfigError

    if data is None:
        data = AuditConfig.read_file(args.config) if args.config else {}  # validated once, with the command line's values
    data.update({"dataset": dataset, "raw_dir": str(raw_dir), "results_dir": str(args.results)})
    options = {**(base_options or {}), **(data.get("dataset_options") or {}), **parse_options(getattr(args, "option", None))}
    data["dataset_options"] = options
    adapter = dataset_adapter(dataset, options)
    preset = getattr(args, "recipe", None) or default_recipe
    presets = adapter.default_pools
    if preset is not None and preset not in presets and getattr(args, "recipe", None) is None:
        preset = None  # a dataset without presets (e.g. a spec dataset): the config defaults, as before presets existed
    flags: dict[str, Any] = {}
    if args.arch is not None:
        flags["architecture"] = {"name": args.arch, "params": {}}
    if args.epochs is not None:
        flags["recipe"] = {"epochs": args.epochs}
    pool = compose_pool(presets, dataset, preset, [data.get("pool"), base_pool], flags)
    data["pool"] = pool
    if args.models is not None:
        pool["n_models"] = args.models
    if args.targets is not None:
        pool["n_targets"] = args.targets
    elif "n_targets" not in pool and "n_models" in pool:
        # a small pool given without --targets: as many held-out targets (default 8) as leave 4 references
        pool["n_targets"] = max(0, min(8, (int(pool["n_models"]) - 4) // 2 * 2))
    if args.seed is not None:
        pool["seed"] = args.seed
    execution = data.setdefault("execution", {})
    if args.dask_address:
        execution["dask_address"] = args.dask_address
    if args.workers:
        execution["n_workers"] = args.workers
    cfg = AuditConfig.model_validate(data)
    arch = cfg.pool.architecture.name
    if arch is not None and adapter.task.modality not in get_architecture(arch).modalities:
        raise ConfigError(
            f"architecture {arch!r} is for {sorted(get_architecture(arch).modalities)} inputs; {dataset} is {adapter.task.modality} "
            f"(see `medaudit architectures`; its paper architecture is {presets.get('paper', {}).get('architecture', {}).get('name')})"
        )
    return cfg


def demo_config(args: argparse.Namespace) -> Any:
    """The AuditConfig `medaudit demo` runs for ``args`` (writing the synthetic cohort if missing); `serve --demo` uses it too."""
    from tasks.synthetic import get_synthetic_writer, write_cohort_once
    from tasks.synthetic.demo_pools import DEMO_RECIPE, demo_options, demo_patients

    get_synthetic_writer(args.dataset)  # an unknown dataset fails here, before anything is written
    patients = args.patients if args.patients is not None else demo_patients(args.dataset)
    raw_dir = demo_data_dir(args.results, args.dataset, patients, args.data_seed)
    if not raw_dir.exists():
        print(f"writing a synthetic {args.dataset} cohort of {patients} patients to {raw_dir}")
        write_cohort_once(args.dataset, raw_dir, patients, args.data_seed)
    # the quick preset (the demo pool) and the demo's adapter options, under --config and --option
    return build_config(args, args.dataset, raw_dir, default_recipe=DEMO_RECIPE, base_options=demo_options(args.dataset))

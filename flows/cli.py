"""`medaudit` console script: demo, audit, ingest, datasets, architectures, sql."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import traceback
from pathlib import Path
from typing import Any

from flows.runtime import configure_prefect


def _add_run_options(p: argparse.ArgumentParser, *, models_default: int | None) -> None:
    p.add_argument("--models", type=int, default=models_default, help="shadow models in the pool (even; default %(default)s)")
    p.add_argument("--targets", type=int, default=None, help="held-out target models for the aggregate attacks (even)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (default ./results)")
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
    _add_option_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_option_flag(p: argparse.ArgumentParser) -> None:
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


def _build_config(
    args: argparse.Namespace,
    dataset: str,
    raw_dir: Path,
    base_pool: dict[str, Any] | None = None,
    *,
    default_recipe: str | None = "paper",
    base_options: dict[str, Any] | None = None,
) -> Any:
    """One AuditConfig from the command line: the dataset's recipe preset (``--recipe``, else
    ``default_recipe``) under the --config file's pool, under ``base_pool`` (what the command itself
    sets), under --models/--arch/--epochs/... (tasks/recipes.py::compose_pool); dataset options:
    ``base_options`` < --config < --option."""
    from models import get_architecture
    from tasks.config import AuditConfig
    from tasks.errors import ConfigError
    from tasks.recipes import compose_pool

    data: dict[str, Any] = {}
    if args.config:
        data = AuditConfig.read_file(args.config)  # validated once, with the command line's values
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


def _print_result(res: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(res, indent=2, default=str))
        return
    from tasks.report import headline_rows

    h = res["headline"]
    print()
    counts = f"{res['n_raw']} raw rows: {res['n_accepted']} accepted, {res['n_quarantined']} quarantined"
    print(f"{'dataset version':20s}{res['dataset_version']} ({counts})")
    print(f"{'pool':20s}{res['pool_key']} ({h['n_models']} models, {h['n_targets']} held-out targets; trained now: {h['trained']})")
    for label, value in headline_rows(h):
        print(f"{label:20s}{value}")
    print(f"results             {res['db_path']}")
    print(f"report              {res['files']['report_html']}")
    print(
        "query               medaudit sql --results", Path(res["db_path"]).parent, "\"SELECT * FROM subgroup_risk WHERE level = 'patient'\""
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.audit import run_audit
    from tasks.demo_pools import DEMO_RECIPE, demo_options, demo_patients
    from tasks.synthetic import get_synthetic_writer, write_cohort_once

    get_synthetic_writer(args.dataset)  # an unknown dataset fails here, before anything is written
    patients = args.patients if args.patients is not None else demo_patients(args.dataset)
    raw_dir = args.results / "demo_data" / args.dataset / f"n{patients}_seed{args.data_seed}"
    if not raw_dir.exists():
        print(f"writing a synthetic {args.dataset} cohort of {patients} patients to {raw_dir}")
        write_cohort_once(args.dataset, raw_dir, patients, args.data_seed)
    # the quick preset (the demo pool) and the demo's adapter options, under --config and --option
    cfg = _build_config(args, args.dataset, raw_dir, default_recipe=DEMO_RECIPE, base_options=demo_options(args.dataset))
    _print_result(run_audit(cfg, show_progress=not args.no_progress), args.json)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from flows.audit import run_audit

    cfg = _build_config(args, args.dataset, args.raw_dir)
    _print_result(run_audit(cfg, show_progress=not args.no_progress), args.json)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from tasks.pseudonym import load_or_create_secret
    from tasks.snapshot import build_snapshot
    from tasks.storage import AuditStore

    adapter = dataset_adapter(args.dataset, parse_options(args.option))
    snap = build_snapshot(adapter, args.raw_dir, args.results, load_or_create_secret(), linkage_file=args.linkage)
    with AuditStore(args.results / "medaudit.duckdb") as store:
        store.register_snapshot(snap)
    print(f"{snap.dataset}: {snap.n_raw} raw rows -> {snap.n_accepted} accepted, {snap.n_quarantined} quarantined")
    print(f"snapshot version {snap.version} at {snap.path}")
    if snap.n_quarantined:
        q = snap.quarantine()
        print("quarantine reasons (top 10):")
        for reason, n in q["reason"].value_counts().head(10).items():
            print(f"  {n:6d}  {reason}")
    repairs = snap.repairs()
    if len(repairs):
        print(f"{len(repairs)} cells repaired, rows kept (repairs.parquet, SQL table repairs):")
        for (column, rule), n in repairs.groupby(["column", "rule"]).size().items():
            print(f"  {n:6d}  {column}: {rule}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from tasks.datasets import list_datasets
    from tasks.synthetic import synthetic_datasets

    synth = set(synthetic_datasets())
    for cls in list_datasets():
        t = cls.task
        print(
            f"{cls.name:14s} {t.kind:10s} {len(t.label_names):2d} labels  input {'x'.join(map(str, t.input_shape)):10s} "
            f"{'demo ' if cls.name in synth else '     '} {cls.description}"
        )
        print(f"{'':14s} layout: {', '.join(cls.layout)}")
        for preset, pool in cls.default_pools.items():
            print(f"{'':14s} --recipe {preset}: {_pool_summary(pool)}")
        if cls.option_help:
            print(f"{'':14s} options: " + "; ".join(f"{k} ({v})" for k, v in cls.option_help.items()))
    return 0


def _pool_summary(pool: dict[str, Any]) -> str:
    """'wrn_28_2, 60 epochs, lr 1.0, batch 512, ...' for a recipe preset."""
    arch = pool.get("architecture", {})
    params = "".join(f":{k}={v}" for k, v in arch.get("params", {}).items())
    recipe = pool.get("recipe", {})
    short = {"learning_rate": "lr", "weight_decay": "wd", "batch_size": "batch", "ema_decay": "ema", "grad_accum_steps": "accum"}
    parts = [f"{arch.get('name')}{params}"] + [f"{short.get(k, k)} {v}" for k, v in recipe.items() if k != "schedule"]
    if "eval_views" in pool:
        parts.append(f"views {pool['eval_views']}")
    return ", ".join(parts)


def cmd_architectures(args: argparse.Namespace) -> int:
    from models import list_architectures
    from tasks.datasets import list_datasets

    used: dict[str, list[str]] = {}
    for cls in list_datasets():
        for preset, pool in cls.default_pools.items():
            used.setdefault(pool.get("architecture", {}).get("name", ""), []).append(f"{cls.name} ({preset})")
    for a in list_architectures():
        default = f"  default of: {', '.join(used[a.name])}" if a.name in used else ""
        print(f"{a.name:14s} {','.join(sorted(a.modalities)):16s} {a.description}{default}")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import pandas as pd

    from tasks.storage import read_only_query

    df = read_only_query(args.results / "medaudit.duckdb", args.query)
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"{len(df)} rows written to {args.csv}")
    elif args.parquet:
        df.to_parquet(args.parquet, index=False)
        print(f"{len(df)} rows written to {args.parquet}")
    else:
        with pd.option_context("display.max_rows", args.max_rows, "display.max_columns", 50, "display.width", 200):
            print(df.to_string(index=False, max_rows=args.max_rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medaudit", description="Patient-level membership-inference privacy audits of medical AI.")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run a whole audit on a built-in synthetic cohort")
    p.add_argument("--dataset", default="mimic-iv-ed", help="synthetic cohort layout (default %(default)s)")
    p.add_argument(
        "--patients", type=int, default=None, help="patients in the synthetic cohort (default: per dataset, 2000 for mimic-iv-ed)"
    )
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic cohort")
    _add_run_options(p, models_default=48)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("audit", help="audit a dataset end to end from its raw layout")
    p.add_argument("dataset", help="registered dataset (see `medaudit datasets`)")
    p.add_argument("raw_dir", type=Path, help="folder with the dataset as downloaded")
    _add_run_options(p, models_default=None)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("ingest", help="validate a raw dataset and write its versioned snapshot")
    p.add_argument("dataset")
    p.add_argument("raw_dir", type=Path)
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--linkage", type=Path, default=None, help="also write the owner-only raw id -> patient key file here")
    _add_option_flag(p)
    p.set_defaults(func=cmd_ingest)

    sub.add_parser("datasets", help="list the registered datasets").set_defaults(func=cmd_datasets)
    sub.add_parser("architectures", help="list the registered architectures").set_defaults(func=cmd_architectures)

    p = sub.add_parser("sql", help="run a read-only SQL query on the results database")
    p.add_argument("query")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--csv", type=Path, default=None, help="write the result to a CSV file")
    p.add_argument("--parquet", type=Path, default=None, help="write the result to a Parquet file")
    p.add_argument("--max-rows", type=int, default=60)
    p.set_defaults(func=cmd_sql)

    import flows.commands

    for mod in sorted(pkgutil.iter_modules(flows.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"flows.commands.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_prefect(quiet=not args.verbose)
    from pydantic import ValidationError

    from tasks.errors import MedauditError

    try:
        return args.func(args)
    except (MedauditError, ValidationError, KeyError, OSError) as exc:
        if isinstance(exc, MedauditError):
            print(f"medaudit: error: {exc}", file=sys.stderr)
        elif isinstance(exc, ValidationError):
            print(f"medaudit: invalid configuration:\n{exc}", file=sys.stderr)
        elif isinstance(exc, KeyError):
            print(f"medaudit: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        else:  # OSError: unwritable or full results folder, missing files: name the path
            print(f"medaudit: error: {exc.strerror or exc} ({exc.filename or ''})", file=sys.stderr)
        _release_frames(exc)
        return 2


def _release_frames(exc: BaseException | None) -> None:
    """Free the locals of the failed calls' frames. Prefect keeps a failed flow's exception (and so its frames)
    until exit; a DuckDB connection still referenced then makes DuckDB's bindings print a 'nanobind: leaked'
    report after the error message."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


if __name__ == "__main__":
    sys.exit(main())

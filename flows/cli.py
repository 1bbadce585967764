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

from flows.options import add_option_flag, add_run_options, build_config, dataset_adapter, demo_config, parse_options
from flows.runtime import configure_prefect
from tasks.results_layout import DEFAULT_RESULTS_DIR, db_path


def _print_result(res: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(res, indent=2, default=str))
        return
    from tasks.report.pool_audit import headline_rows
    from tasks.storage.queries import EXAMPLE_QUERY

    h = res["headline"]
    print()
    counts = f"{res['n_raw']} raw rows: {res['n_accepted']} accepted, {res['n_quarantined']} quarantined"
    print(f"{'dataset version':20s}{res['dataset_version']} ({counts})")
    print(f"{'pool':20s}{res['pool_key']} ({h['n_models']} models, {h['n_targets']} held-out targets; trained now: {h['trained']})")
    for label, value in headline_rows(h):
        print(f"{label:20s}{value}")
    print(f"results             {res['db_path']}")
    print(f"report              {res['files']['report_html']}")
    print("query               medaudit sql --results", Path(res["db_path"]).parent, f'"{EXAMPLE_QUERY}"')


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.audit import run_audit
    from tasks.audit.reaudit import reusable_audit

    cfg = demo_config(args)
    # a rerun with the same data, pool and settings shows the stored audit instead of adding a duplicate
    stored = None if args.force else reusable_audit(cfg)
    if stored is not None and not args.json:
        print(f"reused audit {stored['audit_id']}: {stored['reason']} (--force audits again)")
    _print_result(stored or {**run_audit(cfg, show_progress=not args.no_progress), "reused": False}, args.json)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from flows.audit import run_audit

    cfg = build_config(args, args.dataset, args.raw_dir)
    _print_result(run_audit(cfg, show_progress=not args.no_progress), args.json)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from tasks.ingest.pseudonym import load_or_create_secret
    from tasks.ingest.snapshot import build_snapshot
    from tasks.storage.store import AuditStore

    adapter = dataset_adapter(args.dataset, parse_options(args.option))
    snap = build_snapshot(adapter, args.raw_dir, args.results, load_or_create_secret(), linkage_file=args.linkage)
    with AuditStore(db_path(args.results)) as store:
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

    if getattr(args, "features", None):
        from flows.commands.audit_model import print_features

        return print_features(args.features)
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


def _format_rows(columns: list[str], rows: list[tuple], max_rows: int) -> str:
    """An aligned text table without pandas (`medaudit sql` starts in well under a second); one null style."""

    def cell(v: Any) -> str:
        if v is None:
            return "NULL"
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    shown = rows if len(rows) <= max_rows else rows[: max_rows // 2] + rows[-(max_rows - max_rows // 2) :]
    cells = [[cell(v) for v in r] for r in shown]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    if len(rows) > max_rows:
        lines.insert(1 + max_rows // 2, "...")
        lines.append(f"[{len(rows)} rows; showing {len(shown)}: use --csv FILE for all]")
    return "\n".join(lines)


def cmd_sql(args: argparse.Namespace) -> int:
    from tasks.storage.sealed import open_private, run_sealed, sealed_connection

    con = sealed_connection(db_path(args.results))
    try:
        cur = run_sealed(con, args.query)
        if args.csv or args.parquet:  # the only way a result leaves the database: owner-only files
            path = args.csv or args.parquet
            df = cur.df()
            with open_private(path, "w" if args.csv else "wb") as fh:
                if args.csv:
                    df.to_csv(fh, index=False)
                else:
                    df.to_parquet(fh, index=False)
            print(f"{len(df)} rows written to {path} (owner-only)")
        else:
            columns = [d[0] for d in cur.description]
            print(_format_rows(columns, cur.fetchall(), args.max_rows))
    finally:
        con.close()
    return 0


# Commands that run Prefect flows: an unreachable PREFECT_API_URL is reported before they start.
_FLOW_COMMANDS = {"demo", "audit", "reaudit", "audit-model", "dp-sweep", "scaling"}
# Commands whose start-up must stay fast: without the discovered modules (some import numpy and pandas).
_FAST_COMMANDS = {"sql"}


def build_parser(discover: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medaudit", description="Patient-level membership-inference privacy audits of medical AI.")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run a whole audit on a built-in synthetic cohort")
    p.add_argument("--dataset", default="mimic-iv-ed", help="synthetic cohort layout (default %(default)s)")
    p.add_argument(
        "--patients", type=int, default=None, help="patients in the synthetic cohort (default: per dataset, 2000 for mimic-iv-ed)"
    )
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic cohort")
    add_run_options(p, models_default=48)
    p.add_argument("--force", action="store_true", help="audit again even when an audit with the same data, pool and settings is stored")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("audit", help="audit a dataset end to end from its raw layout")
    p.add_argument("dataset", help="registered dataset (see `medaudit datasets`)")
    p.add_argument("raw_dir", type=Path, help="folder with the dataset as downloaded")
    add_run_options(p, models_default=None)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("ingest", help="validate a raw dataset and write its versioned snapshot")
    p.add_argument("dataset")
    p.add_argument("raw_dir", type=Path)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--linkage", type=Path, default=None, help="also write the owner-only raw id -> patient key file here")
    add_option_flag(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("datasets", help="list the registered datasets")
    p.add_argument("--features", metavar="DATASET", help="list the model inputs of DATASET: names, order, units, imputation")
    p.set_defaults(func=cmd_datasets)
    sub.add_parser("architectures", help="list the registered architectures").set_defaults(func=cmd_architectures)

    p = sub.add_parser("sql", help="run a read-only SQL query on the results database")
    p.add_argument("query")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--csv", type=Path, default=None, help="write the result to a CSV file")
    p.add_argument("--parquet", type=Path, default=None, help="write the result to a Parquet file")
    p.add_argument("--max-rows", type=int, default=60)
    p.set_defaults(func=cmd_sql)

    if not discover:
        return parser
    import flows.commands

    for mod in sorted(pkgutil.iter_modules(flows.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"flows.commands.{mod.name}").register(sub)
    for name in _SPEC_COMMANDS:
        _add_spec_option(sub.choices[name])
    return parser


# Commands whose DATASET argument can also be a dataset spec: `--spec FILE RAW_DIR` = `spec:FILE RAW_DIR`.
_SPEC_COMMANDS = ("audit", "ingest", "audit-model", "dp-sweep", "scaling")


def _add_spec_option(p: argparse.ArgumentParser) -> None:
    required = []
    for action in p._actions:
        if action.dest in ("dataset", "raw_dir") and not action.option_strings:
            if action.nargs is None:
                required.append(action.dest)
            action.nargs = "?"
    p.add_argument("--spec", type=Path, default=None, help="a dataset spec (docs/OWN_DATA.md) instead of DATASET; give only RAW_DIR then")
    p.set_defaults(required_positionals=tuple(required))


def _apply_spec(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``--spec FILE`` -> dataset ``spec:<absolute FILE>``; a ``spec:`` DATASET gets an absolute path too."""
    if not hasattr(args, "required_positionals"):
        return
    if args.spec is not None:
        if args.raw_dir is not None or args.dataset is None:
            parser.error(f"{args.command}: with --spec give the data folder only: medaudit {args.command} --spec FILE RAW_DIR")
        args.raw_dir, args.dataset = Path(args.dataset), f"spec:{args.spec.resolve()}"
    elif args.dataset is not None and args.dataset.startswith("spec:"):
        args.dataset = f"spec:{Path(args.dataset.removeprefix('spec:')).resolve()}"
    missing = [name for name in args.required_positionals if getattr(args, name) is None]
    if missing:
        parser.error(f"{args.command}: the following arguments are required: {', '.join(missing)} (or --spec FILE RAW_DIR)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(discover=command not in _FAST_COMMANDS)
    args = parser.parse_args(argv)
    _apply_spec(args, parser)
    from tasks.storage.sealed import seal_process

    seal_process()  # results, reports, exports and Prefect's home: owner-only (tasks/storage/sealed.py)
    configure_prefect(quiet=not args.verbose)
    from tasks.errors import MedauditError

    try:
        if args.command in _FLOW_COMMANDS:
            from flows.runtime import check_prefect_api

            check_prefect_api()
        return args.func(args)
    except (MedauditError, KeyError, OSError, ValueError) as exc:
        # pydantic (a ValueError) is imported only here: `medaudit sql` starts without it
        from pydantic import ValidationError

        if isinstance(exc, ValueError) and not isinstance(exc, ValidationError):
            raise
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

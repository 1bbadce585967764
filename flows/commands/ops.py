"""Operations commands: server, serve, reaudit, gate, history, report.

* ``medaudit server``: a Prefect server (API + UI) on 127.0.0.1 with its database in the project's folder.
* ``medaudit serve``: scheduled re-audit deployments (deployments/reaudit.py) on that server.
* ``medaudit reaudit``: one re-audit now (audits only if the snapshot, pool or settings changed).
* ``medaudit gate``: a CI/release gate on the latest audit's numbers (exit 1 when a threshold is exceeded, 2 when the
  audit's evidence is too weak to pass or fail: see ``--min-evidence``).
* ``medaudit history`` / ``medaudit report``: past audits, and where the latest report is.

Prefect is imported inside the commands, after flows.cli has configured its environment.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError, MedauditError
from tasks.results_layout import DEFAULT_RESULTS_DIR, audit_report_dir, db_path

DEFAULT_PORT = 4200


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="start a Prefect server (API and UI) on 127.0.0.1 to watch audits")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    p.add_argument("--no-ui", action="store_true", help="API only")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("serve", help="serve scheduled re-audits on the Prefect server at PREFECT_API_URL (runs until stopped)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="audit configuration file (YAML/JSON) with dataset and raw_dir")
    src.add_argument("--deployments", type=Path, help="a deployments file (see deployments/schedules.yaml)")
    src.add_argument(
        "--demo", nargs="?", const="mimic-iv-ed", metavar="DATASET", help="re-audit what `medaudit demo [--dataset DATASET]` audits"
    )
    p.add_argument("--patients", type=int, default=None, help="with --demo: as `medaudit demo --patients`")
    p.add_argument("--models", type=int, default=None, help="with --demo: as `medaudit demo --models` (default 48)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--cron", default=None, help='cron schedule with --config (default "0 3 * * *": nightly at 03:00)')
    when.add_argument("--interval", type=float, default=None, help="or an interval in seconds")
    p.add_argument("--timezone", default=None, help="time zone of the cron schedule (default UTC)")
    p.add_argument("--name", default=None, help="deployment name with --config (default reaudit-<dataset>)")
    p.add_argument("--results", type=Path, default=None, help="override the config's results folder")
    p.add_argument("--force", action="store_true", help="audit on every scheduled run, even when nothing changed")
    p.add_argument("--api-url", default=None, help="Prefect API (default $PREFECT_API_URL, e.g. http://127.0.0.1:4200/api)")
    p.add_argument("--limit", type=int, default=1, help="re-audits run at once (default 1: one writer per results database)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("reaudit", help="audit again now if the dataset snapshot, pool or settings changed")
    p.add_argument("--config", type=Path, required=True, help="audit configuration file (YAML/JSON) with dataset and raw_dir")
    p.add_argument("--results", type=Path, default=None, help="override the config's results folder")
    p.add_argument("--models", type=int, default=None, help="override pool.n_models")
    p.add_argument("--epochs", type=int, default=None, help="override pool.recipe.epochs")
    p.add_argument("--dask-address", default=None, help="use an existing Dask scheduler")
    p.add_argument("--force", action="store_true", help="audit even when nothing changed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=cmd_reaudit)

    p = sub.add_parser("gate", help="check the latest audit against thresholds: exit 0 pass, 1 exceeded, 2 error or not enough evidence")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR, help="results folder (default ./results)")
    p.add_argument("--dataset", default=None, help="the latest audit of this dataset (default: the latest audit)")
    p.add_argument("--audit-id", default=None, help="this audit instead of the latest")
    p.add_argument(
        "--max-share-above", type=float, default=None, help="largest allowed share of patients with risk >= --risk (default 0.01)"
    )
    p.add_argument("--risk", type=float, default=0.9, help="risk (per-patient AUC) threshold for --max-share-above (default 0.9)")
    p.add_argument("--max-tpr-at-1e-3", type=float, default=None, help="largest allowed mean TPR at FPR 1e-3 of the attack")
    p.add_argument("--max-lira-auc", type=float, default=None, help="largest allowed mean AUC of the attack over target models")
    p.add_argument("--attack", default="lira_online", help="attack for the TPR/AUC checks (default %(default)s)")
    p.add_argument("--level", default="record", choices=["record", "patient"], help="attack level (default %(default)s)")
    p.add_argument(
        "--min-evidence",
        choices=["sufficient", "none"],
        default="sufficient",
        help="exit 2 (not enough evidence) when the audit's evidence is below this: its flagged patients are mostly what chance "
        "alone gives or its top risks are imprecise, so a pass or fail would be noise (default %(default)s; docs/STATISTICS.md)",
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("history", help="past audits and their headline numbers")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--dataset", default=None)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("report", help="where the latest audit's HTML report is")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR)
    p.add_argument("--dataset", default=None)
    p.add_argument("--audit-id", default=None)
    p.set_defaults(func=cmd_report)


# ---- server --------------------------------------------------------------------------------


def server_command(port: int, ui: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"]
    return cmd if ui else [*cmd, "--no-ui"]


def server_env(port: int) -> dict[str, str]:
    """PREFECT_HOME from flows.runtime.configure_prefect (~/.medaudit/prefect by default); never a remote API."""
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # the server itself must not act as a client of another server
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
    return env


def cmd_server(args: argparse.Namespace) -> int:
    home = os.environ["PREFECT_HOME"]
    Path(home).mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    print(f"Prefect server for medaudit: database in {home}")
    if not args.no_ui:
        print(f"  UI:   {url}")
    print(f"  API:  {url}/api")
    print(f"Point audits and `medaudit serve` at it:  export PREFECT_API_URL={url}/api")
    print("Stop with Ctrl-C.", flush=True)
    proc = subprocess.Popen(server_command(args.port, ui=not args.no_ui), env=server_env(args.port))

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)  # a terminated `medaudit server` stops its Prefect server too
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- serve and reaudit ---------------------------------------------------------------------


def _api_health(api_url: str) -> None:
    import httpx

    try:
        r = httpx.get(api_url.rstrip("/") + "/health", timeout=10)
        r.raise_for_status()
    except Exception as exc:
        raise MedauditError(f"no Prefect server answers at {api_url} ({exc}); start one with `medaudit server`") from exc


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "results", None) is not None:
        out["results_dir"] = str(args.results)
    pool: dict[str, Any] = {}
    if getattr(args, "models", None) is not None:
        pool["n_models"] = args.models
    if getattr(args, "epochs", None) is not None:
        pool["recipe"] = {"epochs": args.epochs}
    if pool:
        out["pool"] = pool
    if getattr(args, "dask_address", None):
        out["execution"] = {"dask_address": args.dask_address}
    return out


def _describe(schedule: Any) -> str:
    if getattr(schedule, "cron", None):
        return f"cron {schedule.cron!r} ({schedule.timezone or 'UTC'})"
    if getattr(schedule, "interval", None):
        return f"every {schedule.interval.total_seconds():g} s"
    return str(schedule)


def cmd_serve(args: argparse.Namespace) -> int:
    if (args.patients or args.models) and not args.demo:
        raise ConfigError("--patients/--models go with --demo; a config file names its own pool")
    if args.deployments and (args.cron or args.interval or args.name):
        raise ConfigError("--cron/--interval/--name go with --config; a deployments file names its own schedules")
    api_url = args.api_url or os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise ConfigError(
            "scheduled re-audits need a Prefect server: start one with `medaudit server` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (or pass --api-url)"
        )
    _api_health(api_url)
    # This process now serves until stopped: its flow runs (child processes) use this server and send
    # their INFO logs to it, to be read in the UI (the CLI's quiet default is WARNING).
    os.environ["PREFECT_API_URL"] = api_url
    os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.reaudit import deployments_from_file, reaudit_deployment
    from flows.reaudit import load_audit_config

    with temporary_settings({PREFECT_API_URL: api_url}):
        if args.deployments:
            deps = deployments_from_file(args.deployments, _overrides(args))
        else:
            cfg = _demo_config(args) if args.demo else load_audit_config(args.config, _overrides(args))
            name = args.name or (f"reaudit-demo-{cfg.dataset}" if args.demo else f"reaudit-{cfg.dataset}")
            cron = args.cron if args.cron or args.interval else "0 3 * * *"
            deps = [reaudit_deployment(cfg, name, cron=cron, interval=args.interval, timezone=args.timezone, force=args.force)]
        from prefect import serve

        for d in deps:
            sched = ", ".join(_describe(getattr(s, "schedule", s)) for s in (d.schedules or [])) or "no schedule (runs on demand)"
            print(f"serving deployment medaudit-reaudit/{d.name}: {sched}", flush=True)
        print(f"runs show at {api_url.rstrip('/').removesuffix('/api')}/deployments; stop with Ctrl-C", flush=True)
        serve(*deps, limit=args.limit, print_starting_message=False)
    return 0


def _demo_config(args: argparse.Namespace) -> Any:
    """The config `medaudit demo --dataset D [--patients N] [--models M] [--results R]` runs, with absolute paths."""
    from flows.options import demo_config
    from flows.reaudit import load_audit_config

    unset = dict.fromkeys(("targets", "config", "seed", "arch", "epochs", "dask_address", "workers"))
    results = (args.results or DEFAULT_RESULTS_DIR).resolve()
    demo = argparse.Namespace(dataset=args.demo, patients=args.patients, data_seed=0, models=args.models or 48, results=results, **unset)
    cfg = demo_config(demo)
    with tempfile.TemporaryDirectory() as tmp:  # through load_audit_config: the same path handling as --config
        path = Path(tmp) / "demo.json"
        path.write_text(cfg.model_dump_json())
        return load_audit_config(path)


def cmd_reaudit(args: argparse.Namespace) -> int:
    from flows.reaudit import load_audit_config, reaudit_flow

    cfg = load_audit_config(args.config, _overrides(args))
    out = reaudit_flow(cfg.model_dump(mode="json"), force=args.force, show_progress=not args.no_progress)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"{'audited' if out['ran'] else 'skipped'}: {out['reason']}")
    print(f"dataset version {out['dataset_version']}, pool {out['pool_key']}, models trained now: {out['trained']}")
    if out["audit"]:
        print(f"audit {out['audit']['audit_id']}: report {out['audit']['files'].get('report_html', out['audit']['report_dir'])}")
    return 0


# ---- gate, history, report -----------------------------------------------------------------


def _db(results: Path) -> Path:
    db = db_path(results)
    if not db.exists():
        raise MedauditError(f"{db}: no audit database here (run an audit first)")
    return db


def cmd_gate(args: argparse.Namespace) -> int:
    from tasks.attacks import list_attacks
    from tasks.audit.gate import evidence_shortfall, gate_checks, latest_audit
    from tasks.storage.store import AuditStore

    attacks = sorted(a.name for a in list_attacks("pool"))
    if args.attack not in attacks:
        raise ConfigError(f"--attack {args.attack}: unknown attack; the audits run {', '.join(attacks)}")
    if args.max_share_above is None and args.max_tpr_at_1e_3 is None and args.max_lira_auc is None:
        args.max_share_above = 0.01
    store = AuditStore(_db(args.results), read_only=True)
    try:
        audit = latest_audit(store, args.dataset, args.audit_id)
        checks = gate_checks(
            store,
            audit["audit_id"],
            max_share_above=args.max_share_above,
            risk=args.risk,
            max_tpr_at_1e3=args.max_tpr_at_1e_3,
            max_auc=args.max_lira_auc,
            attack=args.attack,
            level=args.level,
        )
    finally:
        store.close()
    failed = [c for c in checks if c.passed is False]
    missing = [c for c in checks if c.passed is None]
    weak = evidence_shortfall(audit["headline"], args.min_evidence)
    if args.json:
        summary = {k: audit[k] for k in ("audit_id", "dataset", "dataset_version", "pool_key", "n_models", "finished_at")}
        passed = not failed and not missing and weak is None
        evidence = {"evidence": audit["headline"].get("evidence"), "required": args.min_evidence, "reason": weak}
        out = {"audit": summary, "checks": [asdict(c) for c in checks], "evidence": evidence, "passed": passed}
        print(json.dumps(out, indent=2, default=str))
    else:
        print(
            f"audit {audit['audit_id']} of {audit['dataset']} (dataset version {audit['dataset_version']}, pool {audit['pool_key']}, "
            f"{audit['n_models']} models, finished {audit['finished_at']})"
        )
        for c in checks:
            status = "n/a " if c.passed is None else ("PASS" if c.passed else "FAIL")
            observed = "not available" if c.observed is None else f"{c.observed:.4f}"
            print(f"  {status}  {c.name:38s} observed {observed:>13s}  threshold <= {c.threshold:g}   ({c.detail})")
        if weak is None:
            verdict = "FAILED" if failed else ("INCOMPLETE" if missing else "passed")
            extra = f", {len(missing)} not evaluable" if missing else ""
            print(f"gate {verdict}: {len(failed)} of {len(checks)} thresholds exceeded{extra}")
        else:
            print(f"gate: not enough evidence to pass or fail ({weak})")
    if weak is not None:
        return 2
    if missing and not failed:
        raise MedauditError(f"the audit has no value for: {', '.join(c.name for c in missing)} (no held-out targets or FPR point?)")
    return 1 if failed else 0


def cmd_history(args: argparse.Namespace) -> int:
    import pandas as pd

    from tasks.storage.queries import audit_history

    df, runs = audit_history(_db(args.results), args.dataset)
    with pd.option_context("display.max_columns", 20, "display.width", 200, "display.max_colwidth", 90):
        print("audits" if not df.empty else "no audits yet")
        if not df.empty:
            print(df.to_string(index=False, na_rep="n/a"))
        if runs is not None and not runs.empty:
            print("\nre-audit runs (audited and skipped; the numbers are of the run's audit, or of the audit a skipped run kept)")
            print(runs.to_string(index=False, na_rep="n/a"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tasks.audit.gate import latest_audit
    from tasks.storage.store import AuditStore

    store = AuditStore(_db(args.results), read_only=True)
    try:
        audit = latest_audit(store, args.dataset, args.audit_id)
    finally:
        store.close()
    folder = audit_report_dir(args.results, audit["dataset"], audit["audit_id"])
    report = folder / "report.html"
    if not report.exists():
        raise MedauditError(f"audit {audit['audit_id']}: no report at {report}")
    print(f"audit {audit['audit_id']} of {audit['dataset']} finished {audit['finished_at']}")
    print(f"report  {report.resolve()}")
    print(f"files   {folder.resolve()}")
    return 0

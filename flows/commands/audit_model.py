"""`medaudit audit-model`: the patient-level risk of one existing model, from few reference models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def build_target_config(args: argparse.Namespace) -> Any:
    """The AuditConfig of an audit-model run: the reference pool (no held-out targets) plus ``target``."""
    from flows.cli import _build_config
    from flows.commands.scaling import parse_archs
    from tasks.config import AuditConfig
    from tasks.errors import ConfigError

    base: dict[str, Any] = {"n_targets": 0}
    arch = None
    if args.arch:
        try:
            (arch,) = parse_archs(args.arch)
        except ValueError as exc:
            raise ConfigError(f"--arch {args.arch!r}: {exc}") from exc
        base["architecture"] = arch
        args.arch = None  # the pool architecture is set through base, with its options
    if args.models is None:
        args.models = 8
    args.targets = 0
    cfg = _build_config(args, args.dataset, args.raw_dir, base)
    target = {
        "members_path": str(args.members),
        "variance": args.variance,
        "input_standardization": "none" if args.raw_inputs else "members",
        "name": args.name,
    }
    if args.model:
        target["model_path"] = str(args.model)
        if arch is not None and not args.torchscript:
            target["architecture"] = arch
    if args.logits:
        target["logits_path"] = str(args.logits)
    data = json.loads(cfg.model_dump_json())
    data["target"] = target
    return AuditConfig.model_validate(data)


def cmd_audit_model(args: argparse.Namespace) -> int:
    from flows.audit_model import run_audit_model
    from tasks.target_report import target_rows

    cfg = build_target_config(args)
    res = run_audit_model(cfg, show_progress=not args.no_progress)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
        return 0
    h = res["headline"]
    print()
    print(f"{'audited model':20s}{res['target_name']} ({h['target_kind']}), {h['n_member_records']} member records of {h['n_records']}")
    print(f"{'reference pool':20s}{res['pool_key']} (trained now: {h['trained']})")
    for label, value in target_rows(h):
        print(f"{label:20s}{value}")
    print(f"results             {res['db_path']}  (views target_record_risk, target_patient_risk, target_audit_summary)")
    print(f"report              {res['files']['report_html']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from flows.cli import _add_run_options

    p = sub.add_parser(
        "audit-model",
        help="audit an existing model (TorchScript, state dict or exported logits) with few reference models",
        description=(
            "Which patients does this trained model expose? Trains (or reuses) --models reference models on random patient "
            "halves of the same data, scores the model on every record and runs offline LiRA and RMIA. Patient risk is "
            "compared with the model's non-member patients, which give the rate expected by chance."
        ),
    )
    p.add_argument("dataset")
    p.add_argument("raw_dir", type=Path, help="the dataset in its published layout (the records the model was trained and tested on)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="TorchScript file, or a state dict (with --arch) of a registry architecture")
    src.add_argument("--logits", type=Path, help="exported logits: CSV/Parquet with source_file, source_row, logit_0..logit_{C-1}[, view]")
    p.add_argument(
        "--members",
        type=Path,
        required=True,
        help="what the model was trained on: CSV/Parquet with a patient_id column (raw ids) or source_file + source_row columns",
    )
    p.add_argument("--torchscript", action="store_true", help="--model is TorchScript even though --arch is given (for the references)")
    p.add_argument("--variance", choices=["auto", "per_record", "fixed"], default="auto", help="offline LiRA variance (default auto)")
    p.add_argument("--raw-inputs", action="store_true", help="feed tabular inputs unstandardised (the model standardises itself)")
    p.add_argument("--name", default=None, help="name of the audited model in the results (default: the file name)")
    _add_run_options(p, models_default=None)
    p.set_defaults(func=cmd_audit_model)

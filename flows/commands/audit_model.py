"""`medaudit audit-model`: the patient-level risk of one existing model, from few reference models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def build_target_config(args: argparse.Namespace) -> Any:
    """The AuditConfig of an audit-model run: the reference pool (no held-out targets) plus ``target``."""
    from flows.commands.scaling import parse_archs
    from flows.options import build_config
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
    data = AuditConfig.read_file(args.config) if args.config else {}
    # config-file `target:` keys (input_columns, logit_columns, min_auroc, fdr, reference_recipe, ...) first, flags over them
    target: dict[str, Any] = dict(data.pop("target", None) or {})
    cfg = build_config(args, args.dataset, args.raw_dir, base, data=data)
    if args.raw_inputs:
        print("--raw-inputs is deprecated: it means --standardize none (medaudit's features, not standardised)", file=sys.stderr)
        args.standardize = args.standardize or "none"
    target.update({"members_path": str(args.members), "variance": args.variance, "name": args.name})
    for key, value in (
        ("input_standardization", args.standardize),
        ("input_imputation", args.imputation),
        ("min_auroc", args.min_auroc),
        ("fdr", args.fdr),
    ):
        if value is not None:
            target[key] = value
    if args.input_columns:
        target["input_columns"] = _names(args.input_columns, "--input-columns")
    if args.logit_columns:
        target["logit_columns"] = _names(args.logit_columns, "--logit-columns")
    if args.allow_missing:
        target["allow_missing"] = True
    if args.force:
        target["force"] = True
    if args.reference_recipe:
        target["reference_recipe"] = AuditConfig.read_file(args.reference_recipe)
    if args.model:
        target["model_path"] = str(args.model)
        if arch is not None and not args.torchscript:
            target["architecture"] = arch
    if args.logits:
        target["logits_path"] = str(args.logits)
    data = json.loads(cfg.model_dump_json())
    data["target"] = target
    return AuditConfig.model_validate(data)


def _names(value: str, flag: str) -> list[str]:
    """Comma-separated names, or @FILE with one name per line."""
    from tasks.errors import ConfigError

    if value.startswith("@"):
        try:
            names = [ln.strip() for ln in Path(value[1:]).read_text().splitlines() if ln.strip()]
        except OSError as exc:
            raise ConfigError(f"{flag} {value}: {exc}") from exc
    else:
        names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{flag} names no column")
    return names


def cmd_audit_model(args: argparse.Namespace) -> int:
    from flows.audit_model import run_audit_model
    from tasks.audit.model_run import preflight
    from tasks.report.model_audit import model_audit_rows

    cfg = build_target_config(args)
    preflight(cfg)  # wrong files and input widths fail in seconds, before Dask and Prefect start
    res = run_audit_model(cfg, show_progress=not args.no_progress)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
        return 0
    h = res["headline"]
    print()
    print(f"{'audited model':20s}{res['target_name']} ({h['target_kind']}), {h['n_member_records']} member records of {h['n_records']}")
    print(f"{'reference pool':20s}{res['pool_key']} (trained now: {h['trained']})")
    for label, value in model_audit_rows(h):
        print(f"{label:20s}{value}")
    if h.get("members_excluded_at_ingest"):
        print(
            f"warning: {h['members_excluded_at_ingest']} members excluded at ingest (lines {h['members_excluded_lines'][:10]})",
            file=sys.stderr,
        )
    print(f"results             {res['db_path']}  (views model_audit_record_risk, model_audit_patient_risk, model_audit_summary)")
    print(f"report              {res['files']['report_html']}")
    return 0


def print_features(dataset: str) -> int:
    """`medaudit datasets --features D`: the inputs medaudit derives for D, as a model gets them."""
    from tasks.datasets import get_dataset

    adapter = get_dataset(dataset)
    t = adapter.task
    print(f"{adapter.name}: input {'x'.join(map(str, t.input_shape))} ({t.modality}), task {t.kind}: {', '.join(t.label_names)}")
    contract = getattr(adapter, "feature_contract", None)
    if contract is None:
        print("  no named features: the adapter decodes the raw files (images / signals) to the input shape above")
        return 0
    print(f"  {'#':>3s}  {'feature':28s} {'unit / derivation':58s} imputation")
    for i, (name, unit, imputation) in enumerate(contract()):
        print(f"  {i:3d}  {name:28s} {unit:58s} {imputation}")
    print("  audit-model standardises these with the members' mean/std unless --standardize none")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from flows.options import add_run_options

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
    p.add_argument(
        "--input-columns",
        metavar="C1,C2,...|@FILE",
        help="--model was trained on these raw columns of the dataset table, in this order (default: medaudit's derived "
        "features, see `medaudit datasets --features DATASET`)",
    )
    p.add_argument(
        "--standardize",
        choices=["members", "none"],
        default=None,
        help="standardise the model's inputs with its members' mean/std (default) or feed them as they are (a model that "
        "standardises itself)",
    )
    p.add_argument("--raw-inputs", action="store_true", help=argparse.SUPPRESS)  # deprecated alias of --standardize none
    p.add_argument(
        "--imputation", choices=["member_mean", "zero"], default=None, help="empty raw-column cells: the members' mean (default) or 0"
    )
    p.add_argument(
        "--logit-columns",
        metavar="C1,...|@FILE",
        help="logit columns of --logits by class, in the task's label order; for a binary task NEG,POS reads a two-class head "
        "(logits: POS - NEG; softmax probabilities: log(POS/NEG))",
    )
    p.add_argument("--allow-missing", action="store_true", help="records without logits are left out (and counted) instead of an error")
    p.add_argument("--min-auroc", type=float, default=None, help="sanity gate: the model's task AUROC on its non-members (default 0.55)")
    p.add_argument("--force", action="store_true", help="audit even if the model fails the sanity gate (the report says so)")
    p.add_argument("--fdr", type=float, default=None, help="false discovery rate of the member-patient verdicts (default 0.05)")
    p.add_argument(
        "--reference-recipe",
        type=Path,
        metavar="FILE",
        help="YAML/JSON training recipe like the audited model's (e.g. optimizer: adamw); a second reference pool is trained "
        "with it and the headline compares the verdicts",
    )
    p.add_argument("--name", default=None, help="name of the audited model in the results (default: the file name)")
    add_run_options(p, models_default=None)
    p.set_defaults(func=cmd_audit_model)

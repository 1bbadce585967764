"""`medaudit init-dataset TABLE`: write a starting dataset spec from a look at the table (docs/OWN_DATA.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_init_dataset(args: argparse.Namespace) -> int:
    from tasks.datasets.spec_init import propose_spec, summary_lines
    from tasks.errors import ConfigError

    out = args.out or Path(f"{args.table.stem}.dataset.yaml")
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; give --out elsewhere or --force to overwrite it")
    try:
        proposal = propose_spec(args.table, args.images_root, args.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out.write_text(proposal.spec_text)
    for line in summary_lines(proposal):
        print(line)
    print()
    print(f"patient id   {proposal.patient_id}")
    print(f"record id    {proposal.record_id or '(none: one record per row)'}")
    print(f"label        {proposal.label or '(none found: set label.column)'}")
    print(f"subgroups    {', '.join(proposal.subgroups) or '(none found)'}")
    print(f"identifiers  {', '.join(proposal.identifiers)} (never printed)")
    print(f"inputs       {proposal.input_kind}")
    print(f"spec written to {out}: check the lines marked CHECK, then `medaudit ingest --spec {out} {args.table.parent}`")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init-dataset",
        help="write a starting dataset spec (YAML) for your own table",
        description="Looks at TABLE (CSV, TSV or Parquet) and proposes the patient and record id, label, subgroups, identifier "
        "columns and inputs of a dataset spec, with comments saying what to check. Values of columns it takes for identifiers "
        "are never printed.",
    )
    p.add_argument("table", type=Path, help="the record table: one row per record (image, ECG, visit, ...)")
    p.add_argument("--images-root", type=Path, default=None, help="folder the table's file names point into (images or .npy signals)")
    p.add_argument("--name", default=None, help="dataset name (default: from the table's file name)")
    p.add_argument("--out", type=Path, default=None, help="spec file to write (default: TABLE_STEM.dataset.yaml here)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_init_dataset)

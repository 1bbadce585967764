"""`medaudit compare AUDIT_A AUDIT_B`: what changed between two audits of the same dataset.

Patients newly at risk / no longer at risk (pseudonymous keys), subgroup shifts with McNemar's exact
test (tasks/risk/compare.py) and the headline deltas. The SQL side is the ``compare_audits(a, b)`` and
``compare_subgroups(a, b)`` table macros (tasks/storage/store.py), also usable in `medaudit sql`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tasks.errors import MedauditError
from tasks.results_layout import DEFAULT_RESULTS_DIR, db_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare two audits: patients newly / no longer at risk, subgroup shifts, headline deltas")
    p.add_argument("audit_a", help="the earlier audit id (see `medaudit history`)")
    p.add_argument("audit_b", help="the later audit id")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR, help="results folder (default ./results)")
    p.add_argument("--min-cell", type=int, default=None, help="suppress groups smaller than this (default: audit B's report.min_cell)")
    p.add_argument("--max-patients", type=int, default=20, help="patients listed per change (default %(default)s; --json lists all)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_compare)


def compare(results: Path, audit_a: str, audit_b: str, min_cell: int | None = None) -> dict[str, Any]:
    """The comparison as plain data: audits, headline deltas, patients by change, subgroup shifts."""
    from tasks.risk.compare import headline_deltas, subgroup_shifts
    from tasks.storage.store import AuditStore

    store = AuditStore(db_path(results), read_only=True)
    try:
        a, b = store.audit_row(audit_a), store.audit_row(audit_b)
        if a["dataset"] != b["dataset"]:
            raise MedauditError(f"audits {audit_a} ({a['dataset']}) and {audit_b} ({b['dataset']}) are of different datasets")
        patients = store.compare_patients(audit_a, audit_b)
        groups = store.compare_subgroups(audit_a, audit_b)
    finally:
        store.close()
    if min_cell is None:
        min_cell = int(b["config"].get("report", {}).get("min_cell", 10))
    return {
        "audit_a": {k: a[k] for k in ("audit_id", "dataset_version", "pool_key", "n_models", "finished_at")},
        "audit_b": {k: b[k] for k in ("audit_id", "dataset_version", "pool_key", "n_models", "finished_at")},
        "dataset": a["dataset"],
        "risk_threshold": (a["headline"].get("risk_threshold"), b["headline"].get("risk_threshold")),
        "headline": headline_deltas(a["headline"], b["headline"]),
        "patients": patients,
        "subgroups": subgroup_shifts(groups, min_cell) if not groups.empty else groups,
        "min_cell": min_cell,
    }


def cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    out = compare(args.results, args.audit_a, args.audit_b, args.min_cell)
    patients, subgroups = out["patients"], out["subgroups"]
    counts = patients["change"].value_counts()
    if args.json:
        doc = {
            **{k: out[k] for k in ("audit_a", "audit_b", "dataset", "risk_threshold", "min_cell")},
            "counts": {k: int(v) for k, v in counts.items()},
            "headline": json.loads(out["headline"].to_json(orient="records")),
            "newly_at_risk": patients.loc[patients["change"] == "newly at risk", "patient_key"].tolist(),
            "no_longer_at_risk": patients.loc[patients["change"] == "no longer at risk", "patient_key"].tolist(),
            "subgroups": json.loads(subgroups.to_json(orient="records")),
        }
        print(json.dumps(doc, indent=2, default=str))
        return 0
    a, b = out["audit_a"], out["audit_b"]
    print(f"{out['dataset']}: audit A {a['audit_id']} ({a['n_models']} models, pool {a['pool_key']}, finished {a['finished_at']})")
    print(
        f"{'':{len(out['dataset'])}}  audit B {b['audit_id']} ({b['n_models']} models, pool {b['pool_key']}, finished {b['finished_at']})"
    )
    print(f"risk threshold A/B: {out['risk_threshold'][0]} / {out['risk_threshold'][1]}\n")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print("headline (B - A = change)")
        print(out["headline"].to_string(index=False, na_rep="n/a"))
        print("\npatients: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("newly at risk", "no longer at risk", "still at risk")))
        for change in ("newly at risk", "no longer at risk"):
            rows = patients[patients["change"] == change]
            if rows.empty:
                continue
            more = f" (first {args.max_patients} of {len(rows)}; --json for all)" if len(rows) > args.max_patients else ""
            print(f"\n{change}{more}, by pseudonymous patient key:")
            print(rows.head(args.max_patients)[["patient_key", "risk_a", "risk_b", "risk_change"]].to_string(index=False, na_rep="n/a"))
        if not subgroups.empty:
            cols = ["attribute", "group", "patients", "share_a", "share_b", "share_change", "newly_at_risk", "no_longer_at_risk"]
            shown = subgroups[[*cols, "p_value", "p_holm"]].copy()
            for c in ("patients", "newly_at_risk", "no_longer_at_risk"):  # counts as integers; suppressed cells blank
                shown[c] = pd.Series([int(v) if v == v else "" for v in shown[c]], index=shown.index, dtype=object)
            shown.loc[subgroups["suppressed"], "patients"] = f"suppressed (n < {out['min_cell']})"
            print("\nsubgroup shifts, most significant first (McNemar exact test on the patients who changed; p_holm within an attribute):")
            print(shown.to_string(index=False, na_rep=""))
    return 0

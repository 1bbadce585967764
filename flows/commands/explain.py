"""`medaudit explain PATIENT_KEY`: why one patient is exposed (records, rarity, atypicality, IN vs OUT scores)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tasks.results_layout import DEFAULT_RESULTS_DIR, db_path


def cmd_explain(args: argparse.Namespace) -> int:
    from tasks.audit.explain import explanation_text, score_plot
    from tasks.storage.store import AuditStore

    with AuditStore(db_path(args.results), read_only=True) as store:
        ex = store.patient_explanation(args.patient_key, args.audit)
    plot = None
    if not args.no_plot:
        plot = score_plot(ex, args.results / "explain" / ex["audit"]["audit_id"] / f"{args.patient_key}.png")
    if args.json:
        out = {
            "audit": ex["audit"],
            "patient": ex["patient"],
            "records": ex["records"].to_dict(orient="records"),
            "plot": str(plot) if plot else None,
        }
        print(json.dumps(out, indent=2, default=str))
    else:
        print(explanation_text(ex, plot))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="why one patient is exposed: their records' risk, rarity, atypicality and IN/OUT scores")
    p.add_argument("patient_key", help="pseudonymous patient key (as in patient_risk)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS_DIR, help="results folder (default ./results)")
    p.add_argument("--audit", default=None, help="audit id (default: the latest finished audit holding the patient)")
    p.add_argument("--no-plot", action="store_true", help="do not write the IN/OUT score plot")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(func=cmd_explain)

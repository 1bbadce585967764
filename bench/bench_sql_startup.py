"""Start-up of `medaudit sql`: wall time of one query in a fresh process, side by side with bare Python.

The query itself is trivial (``SELECT count(*) FROM audits`` on an empty results database), so the time
is the command's start-up: interpreter, imports, argument parsing, opening the sealed connection.
`medaudit sql` imports neither numpy nor pandas on that path (flows/cli.py, tasks/storage/sealed.py). Reports
the median of ``--repeat`` runs of each and their ratio. Usage:

    .venv/bin/python bench/bench_sql_startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tasks.results_layout import db_path

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MEDAUDIT_HOME": str(Path(tmp) / "home")}
        results = Path(tmp) / "results"
        db = db_path(results)
        make = f"from pathlib import Path; from tasks.storage.store import AuditStore; AuditStore(Path({str(db)!r})).close()"
        subprocess.run([sys.executable, "-c", make], env=env, cwd=ROOT, check=True)
        medaudit = [sys.executable, "-m", "flows.cli", "sql", "--results", str(results), "SELECT count(*) FROM audits"]
        runs = {
            "python -c pass": [wall([sys.executable, "-c", "pass"], env) for _ in range(args.repeat)],
            "python -c 'import pandas'": [wall([sys.executable, "-c", "import pandas"], env) for _ in range(args.repeat)],
            "medaudit sql": [wall(medaudit, env) for _ in range(args.repeat)],
        }
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({"median_seconds": med, "sql_over_bare_python": med["medaudit sql"] / med["python -c pass"]}, indent=2))


if __name__ == "__main__":
    main()

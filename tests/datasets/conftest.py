"""Shared by the dataset tests. The identifier scan (fixture ``leak_scan``): every raw identifier of a
dataset as downloaded, and every place medaudit writes something a user sees, searched for them.

Identifiers are the values of every column a dataset's contract lists under ``identifiers`` (read from
the raw tables wherever they lie under ``raw_dir``), and the names of files and folders under
``raw_dir`` that embed one (a run of 4+ digits or a 32-hex hash: ``patient00001/``, ``<md5>.jpg``,
``00013_lr``, ``p10000032/``, ``slo_fundus_01351.jpg``, ``<empi_anon>/``). Values shorter than 5
characters are not searched: they would match line numbers and counts (the file names that embed
such ids, e.g. ``00013_lr``, are searched instead). A hit needs a token boundary on both sides (no
letter, digit or '.' before, no letter or digit after), so a 5-digit id does not match inside a float.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pandas as pd
import pytest

from tasks.datasets.contracts import load_contract

_EMBEDS_ID = re.compile(r"\d{4,}|[0-9a-fA-F]{32}")
_GENERIC = re.compile(r"0+|\d+x\d+")  # PTB-XL's records100/00000/ block folders, EMBED's png/1024x768/
MIN_LENGTH = 5


def _normal(value: str) -> str:
    value = str(value).strip()
    return value[:-2] if value.endswith(".0") and value[:-2].isdigit() else value


def raw_identifiers(dataset: str, raw_dir: Path) -> set[str]:
    """The identifier values of ``dataset``'s raw tables under ``raw_dir`` and the file/folder names
    that embed one (see the module docstring)."""
    raw_dir = Path(raw_dir)
    found: set[str] = set()
    for table_name, table in load_contract(dataset).tables.items():
        for path in [*raw_dir.rglob(table_name), *raw_dir.rglob(table_name + ".gz")]:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            for column in table.identifiers:
                if column in df.columns:
                    found.update(_normal(v) for v in df[column])
    for path in raw_dir.rglob("*"):
        name = path.stem if path.is_file() else path.name
        if _EMBEDS_ID.search(name) and not _GENERIC.fullmatch(name):
            found.add(name)
    return {v for v in found if len(v) >= MIN_LENGTH}


def _pattern(identifiers: Iterable[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(v) for v in sorted(identifiers, key=len, reverse=True))
    return re.compile(rf"(?<![0-9A-Za-z.])(?:{alternatives})(?![0-9A-Za-z])")


def find_identifiers(texts: dict[str, str], identifiers: set[str]) -> dict[str, list[str]]:
    """{where: [identifiers found]} over named texts; empty when none leaks."""
    if not identifiers:
        return {}
    pattern = _pattern(identifiers)
    hits = {where: sorted(set(pattern.findall(text))) for where, text in texts.items()}
    return {where: found for where, found in hits.items() if found}


def _frame_text(df: pd.DataFrame) -> str:
    return "\n".join(df.columns) + "\n" + df.astype(str).to_csv(index=False)


def results_texts(results: Path) -> dict[str, str]:
    """Everything medaudit wrote under ``results`` that a user reads: every DuckDB table, every
    Parquet file of the snapshots but the model inputs, manifests, reports (HTML without its embedded
    images, Markdown, CSV, JSON)."""
    results = Path(results)
    texts: dict[str, str] = {}
    db = results / "medaudit.duckdb"
    if db.exists():
        with duckdb.connect(str(db), read_only=True) as con:
            query = "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            tables = [r[0] for r in con.execute(query).fetchall()]
            for table in tables:
                texts[f"duckdb:{table}"] = _frame_text(con.execute(f'SELECT * FROM "{table}"').df())
    for path in results.rglob("*"):
        if not path.is_file() or "demo_data" in path.parts:
            continue
        rel = str(path.relative_to(results))
        if path.suffix == ".parquet" and path.name != "inputs.parquet":
            texts[rel] = _frame_text(pd.read_parquet(path))
        elif path.suffix in {".json", ".md", ".csv", ".txt"}:
            texts[rel] = path.read_text(errors="replace")
        elif path.suffix == ".html":
            texts[rel] = re.sub(r"data:[^\"')\s]+", "", path.read_text(errors="replace"))  # drop base64 figures
    return texts


def artifact_texts(since: object) -> dict[str, str]:
    """Prefect artifacts of the flow runs started at or after ``since`` (a datetime), as text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterStartTime

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)))
        if not runs:
            return {}
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in runs])))
    return {f"artifact:{a.key or a.id}:{a.id}": json.dumps(a.data, default=str) + "\n" + (a.description or "") for a in artifacts}


@pytest.fixture(scope="session")
def leak_scan() -> SimpleNamespace:
    """The scan's functions, for tests of this folder (conftest modules are not importable by name)."""
    return SimpleNamespace(
        raw_identifiers=raw_identifiers, find=find_identifiers, results_texts=results_texts, artifact_texts=artifact_texts
    )

"""The one-way import rule of docs/ARCHITECTURE.md, checked over the import graph of tasks/, flows/, models/ and deployments/.

Every import (module level or inside a function) is read with `ast`; no module is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("tasks", "flows", "models", "deployments")
FOUNDATION = {"tasks.errors", "tasks.results_layout", "tasks.config"}
TASKS = {
    "tasks.attacks",
    "tasks.risk",
    "tasks.datasets",
    "tasks.ingest",
    "tasks.synthetic",
    "tasks.storage",
    "tasks.training",
    "tasks.audit",
    "tasks.report",
}
# Which unit may import which (besides itself); the table of docs/ARCHITECTURE.md.
ALLOWED: dict[str, set[str]] = {
    "tasks.errors": set(),
    "tasks.results_layout": set(),
    "tasks.config": {"tasks.errors", "tasks.results_layout"},
    "models": set(),
    "tasks.attacks": {"tasks.errors"},
    "tasks.risk": {"tasks.attacks", "tasks.errors"},
    "tasks.datasets": {"tasks.config", "tasks.errors"},
    "tasks.synthetic": {"tasks.datasets", "tasks.config", "tasks.errors"},
    "tasks.ingest": {"tasks.datasets"} | FOUNDATION,
    "tasks.storage": {"tasks.ingest"} | FOUNDATION,
    "tasks.training": {"models", "tasks.attacks", "tasks.risk", "tasks.datasets", "tasks.ingest"} | FOUNDATION,
    "tasks.audit": {"models", "tasks.attacks", "tasks.risk", "tasks.training", "tasks.storage", "tasks.ingest", "tasks.datasets"}
    | FOUNDATION,
    "tasks.report": {"tasks.audit", "tasks.attacks", "tasks.risk", "tasks.storage"} | FOUNDATION,
    "flows": {"models"} | TASKS | FOUNDATION,
    "deployments": {"flows", "models"} | TASKS | FOUNDATION,
    "flows.commands": {"flows", "deployments", "models"} | TASKS | FOUNDATION,
    "flows.cli": {"flows.commands", "flows", "models"} | TASKS | FOUNDATION,
}
# The one import against the layering, kept on purpose: AuditConfig's validator fills in the dataset's
# default architecture from the dataset registry (a lazy import). See docs/ARCHITECTURE.md.
EXCEPTIONS = {("tasks.config", "tasks.datasets")}
# Third-party packages a unit must not import: the math is plain numpy/scipy/pandas; orchestration
# (Prefect, Dask) lives in flows/ and deployments/; DuckDB only in tasks/storage.
ORCHESTRATION = {"prefect", "dask", "distributed"}
FORBIDDEN_THIRD_PARTY = {unit: ORCHESTRATION | {"duckdb"} for unit in TASKS | FOUNDATION | {"models"} if unit != "tasks.storage"}
FORBIDDEN_THIRD_PARTY["tasks.storage"] = ORCHESTRATION
# SQL statements in string literals (keywords upper case, as everywhere in the code).
SQL = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+INTO\b|\bCREATE\s+(OR\s+REPLACE\s+)?(TEMP\s+)?(TABLE|VIEW|MACRO|INDEX)\b"
    r"|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b|\bDROP\s+(TABLE|VIEW)\b|\bALTER\s+TABLE\b"
)


def unit_of(module: str) -> str:
    """The package a module belongs to for the rule: tasks.<sub>, flows, flows.cli, flows.commands, models, deployments."""
    parts = module.split(".")
    if parts[0] == "tasks":
        return ".".join(parts[:2])
    if parts[0] == "flows" and len(parts) > 1 and parts[1] in ("cli", "commands"):
        return ".".join(parts[:2])
    return parts[0]


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports(tree: ast.AST, module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import statement; relative imports resolved."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level]
                base = ".".join([*package, base] if base else package)
            out.append((base, [alias.name for alias in node.names], node.lineno))
    return out


def sql_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string literal (f-string parts joined) that holds an SQL statement."""
    hits = []
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
        if id(node) in parts:  # read with its f-string
            continue
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if SQL.search(text):
            hits.append((node.lineno, text[:80]))
    return hits


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (one per back edge)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def _sources() -> list[tuple[Path, str, ast.AST]]:
    files = sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py"))
    return [(p, module_of(p), ast.parse(p.read_text(), filename=str(p))) for p in files]


@pytest.fixture(scope="module")
def graph() -> dict[str, object]:
    edges: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    third: list[str] = []
    private: list[str] = []
    sql: list[str] = []
    for path, module, tree in _sources():
        src = unit_of(module)
        rel = path.relative_to(ROOT)
        for target, names, line in imports(tree, module):
            top = target.split(".")[0]
            if top in SOURCES:
                dst = unit_of(target)
                if dst != src:
                    edges.setdefault(src, set()).add(dst)
                    where.setdefault((src, dst), f"{rel}:{line}")
                if target != module:
                    private += [f"{rel}:{line} imports {target}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
            elif top in FORBIDDEN_THIRD_PARTY.get(src, ()):
                third.append(f"{rel}:{line} ({src}) imports {target}")
        if not str(rel).startswith("tasks/storage/"):
            sql += [f"{rel}:{line}: {text!r}" for line, text in sql_literals(tree)]
    return {"edges": edges, "where": where, "third": third, "private": private, "sql": sql}


def test_every_import_follows_the_table(graph: dict) -> None:
    units = set(graph["edges"]) | {d for ds in graph["edges"].values() for d in ds}
    assert units <= set(ALLOWED), f"packages missing from the table: {sorted(units - set(ALLOWED))}"
    bad = [
        f"{src} -> {dst} ({graph['where'][src, dst]})"
        for src, dsts in sorted(graph["edges"].items())
        for dst in sorted(dsts)
        if dst not in ALLOWED[src] and (src, dst) not in EXCEPTIONS
    ]
    assert not bad, "imports against docs/ARCHITECTURE.md:\n" + "\n".join(bad)


def test_no_cycle_between_packages(graph: dict) -> None:
    edges = {s: {d for d in ds if (s, d) not in EXCEPTIONS} for s, ds in graph["edges"].items()}
    assert cycles(edges) == []


def test_math_orchestration_and_database_imports_stay_in_their_layers(graph: dict) -> None:
    assert graph["third"] == []


def test_no_module_imports_a_private_name_of_another(graph: dict) -> None:
    assert graph["private"] == []


def test_sql_text_only_in_the_storage_package(graph: dict) -> None:
    assert graph["sql"] == []


def test_the_checks_can_fail() -> None:
    """Each check on a small made-up case: a cycle, SQL in an f-string, a private and a forbidden import."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse('q = f"SELECT risk FROM patient_risk WHERE pool_key = {k}"\nhelp = "select the rows you want from the table"\n')
    assert [line for line, _ in sql_literals(tree)] == [1]
    tree = ast.parse("from tasks.report.pool_audit import _png_b64\nfrom . import _x\nimport duckdb\n")
    found = imports(tree, "tasks.report.model_audit")
    assert found == [("tasks.report.pool_audit", ["_png_b64"], 1), ("tasks.report", ["_x"], 2), ("duckdb", [], 3)]
    assert (
        unit_of("tasks.risk.roc") == "tasks.risk"
        and unit_of("flows.commands.ops") == "flows.commands"
        and unit_of("flows.audit") == "flows"
    )
    assert "duckdb" in FORBIDDEN_THIRD_PARTY["tasks.attacks"] and "prefect" in FORBIDDEN_THIRD_PARTY["tasks.risk"]

"""Every citation in the repository resolves inside it.

Code, tests and docs cite design decisions as ``design D7`` (a section of docs/design/decisions.md),
the paper's method as ``method §4.4`` (a section of docs/design/method.md) and the authors' bugs as
``method pitfall 12`` (an item of method.md §6.2). Nothing may point outside the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design"
THIS = Path(__file__).resolve()

DECISION = re.compile(r"(?<![\w/#-])D(\d+)\b")
SECTION = re.compile(r"§\s?(\d+(?:\.\d+)?)")
PITFALL = re.compile(r"\bpitfalls? (\d+)")
# Spelled in pieces so that this file does not match itself.
OUTSIDE = [
    re.compile(p)
    for p in (
        r"\.\./" + "shared",
        "/" + "work/",
        "paper" + "-method",
        r"\bpaper §",
        r"(?<![\w-])DECISIONS\.md",  # the binding decisions are docs/design/decisions.md
        r"\b(?:ENVIRONMENT|STYLE|peers)\.md",  # design notes kept outside the repository
    )
]


def decision_numbers() -> set[str]:
    return set(re.findall(r'<a id="d(\d+)"></a>', (DESIGN / "decisions.md").read_text()))


def method_sections() -> set[str]:
    return {m.group(1) for m in re.finditer(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", (DESIGN / "method.md").read_text(), re.M)}


def pitfall_numbers() -> set[str]:
    text = (DESIGN / "method.md").read_text()
    block = text.split("### 6.2 ", 1)[1]
    return set(re.findall(r"^(\d+)\. ", block, re.M))


def problems(text: str, decisions: set[str], sections: set[str], pitfalls: set[str]) -> list[str]:
    """What in ``text`` does not resolve: one line per broken citation, with its line number."""
    found = []
    for no, line in enumerate(text.splitlines(), 1):
        found += [f"{no}: points outside the repository ({p.pattern})" for p in OUTSIDE if p.search(line)]
        found += [f"{no}: D{n} has no section in docs/design/decisions.md" for n in DECISION.findall(line) if n not in decisions]
        found += [f"{no}: §{n} has no section in docs/design/method.md" for n in SECTION.findall(line) if n not in sections]
        found += [f"{no}: pitfall {n} is not in docs/design/method.md §6.2" for n in PITFALL.findall(line) if n not in pitfalls]
    return found


def repository_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    files = []
    for rel in out.splitlines():
        path = ROOT / rel
        if path == THIS or not path.is_file():
            continue
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images and other binaries cite nothing
            continue
        files.append(path)
    return files


def test_every_citation_resolves_inside_the_repository() -> None:
    decisions, sections, pitfalls = decision_numbers(), method_sections(), pitfall_numbers()
    broken = [
        f"{path.relative_to(ROOT)}:{p}"
        for path in repository_text_files()
        for p in problems(path.read_text(encoding="utf-8"), decisions, sections, pitfalls)
    ]
    assert not broken, "citations that do not resolve:\n" + "\n".join(broken)


def test_the_pitfall_numbers_of_the_deviations_table_exist() -> None:
    pitfalls = pitfall_numbers()
    cited = set()
    for group in re.findall(r"\[(\d+(?:\s*[-,]\s*\d+)*)\]", (ROOT / "docs" / "DECISIONS-IMPLEMENTED.md").read_text()):
        for part in group.split(","):
            lo, _, hi = part.strip().partition("-")
            cited.update(str(n) for n in range(int(lo), int(hi or lo) + 1))
    assert cited and cited <= pitfalls, sorted(cited - pitfalls, key=int)


def test_the_modules_a_decision_names_exist() -> None:
    named = re.findall(r"`((?:tasks|flows|models|deployments|data_contracts)/[\w/.]*)`", (DESIGN / "decisions.md").read_text())
    assert named
    missing = sorted({p for p in named if not (ROOT / p).exists()})
    assert not missing, f"docs/design/decisions.md names modules that do not exist (moved? update the Where lines): {missing}"


def test_links_of_the_design_docs_resolve() -> None:
    for doc in DESIGN.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"


@pytest.mark.parametrize(
    "text",
    [
        "see ../" + "shared/spec/ENVIRONMENT.md",
        "(" + "paper" + "-method §4.4)",
        "one writer (design D99)",
        "binormal AUC (method §4.99)",
        "as the paper, method pitfall 99",
        "the binding DECISIONS" + ".md",
        "measured 2x (ENVIRONMENT" + ".md)",
    ],
)
def test_a_citation_that_does_not_resolve_is_reported(text: str) -> None:
    assert problems(text, decision_numbers(), method_sections(), pitfall_numbers())


def test_citations_that_resolve_are_not_reported() -> None:
    text = "streams blocks (design D11, method §4.4-§4.5; method pitfall 22; docs/DECISIONS-IMPLEMENTED.md); 1D conv"
    assert problems(text, decision_numbers(), method_sections(), pitfall_numbers()) == []

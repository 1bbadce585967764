"""`medaudit init-dataset`: a starting dataset spec from a look at one table.

The proposal is a heuristic, so every choice is written with a comment saying what to check. Column
roles come from names and from the values' shape (uniqueness, cardinality, numbers, file names):

* identifiers: id-like names (``*_id``, mrn, accession, uid, hash, serial, ...), columns with a
  distinct text value on (nearly) every row, URLs, file paths and free text. Their values are never
  printed or written: not in the spec, not in the summary;
* record id: an identifier unique on every row; patient id: a repeated identifier (preferring
  patient/subject/mrn names), else the record id (one record per patient);
* label: a column of 2-20 values whose name says outcome/label/diagnosis/target/...; the fewest
  classes win; other label-like columns become subgroups (a disease grouping);
* subgroups: sex/gender, race/ethnicity, age (binned), insurance, skin type, language, ...;
* inputs: an image (or NumPy signal) column when its values name files under ``images_root`` (with or
  without a suffix), else tabular features from the numeric and low-cardinality text columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.datasets.spec import parse_spec
from tasks.datasets.spec_table import as_number, read_table_as_strings, table_format

_ID_NAME = re.compile(r"(^|_)(id|ids|mrn|uid|uuid|accession|hash|md5|md5hash|serial|ssn|nhs|file|filename|dicom)($|_)", re.I)
_CAMEL_ID = re.compile(r"[a-z0-9](Id|ID)$")
_PATIENT_NAME = re.compile(r"patient|subject|mrn|person|pid|participant", re.I)
_LABEL_NAME = re.compile(r"outcome|label|target|diagnos|dx|class|admit|mortal|death|event|finding|lesion|disease", re.I)
_SUBGROUP_NAME = re.compile(r"sex|gender|race|ethnic|(^|_)age($|_)|insurance|payer|skin|fitzpatrick|language|marital|religion", re.I)
_SPLIT_NAME = re.compile(r"^(split|partition|fold|subset|set|qc)$", re.I)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_SIGNAL_EXT = (".npy",)


@dataclass
class Column:
    name: str
    n: int
    n_missing: int
    n_unique: int
    numeric_share: float
    role: str = "unused"  # identifier | free text | date | label | feature | subgroup | split | input path
    note: str = ""
    values: list[str] = field(default_factory=list)  # only for low-cardinality, non-identifier columns


def _profile(df: pd.DataFrame) -> list[Column]:
    cols = []
    for name in [c for c in df.columns if not c.startswith("_")]:
        s = df[name]
        present = s.dropna().astype(str).str.strip()
        present = present[present != ""]
        num = as_number(present)
        c = Column(name, len(s), int(len(s) - len(present)), int(present.nunique()), float(num.notna().mean()) if len(present) else 0.0)
        if c.n_unique <= 20:
            c.values = sorted(present.unique().tolist(), key=lambda v: (-int((present == v).sum()), v))
        cols.append(c)
    return cols


def _looks_like_identifier(c: Column, s: pd.Series) -> str | None:
    text = s.dropna().astype(str)
    if _ID_NAME.search(c.name) or _CAMEL_ID.search(c.name):
        return "its name looks like an identifier"
    if _PATIENT_NAME.search(c.name) and (c.numeric_share < 0.5 or c.n_unique > 20):
        return "its name says it identifies a patient"
    if len(text) and text.str.contains(r"^https?://|[/\\]", regex=True).mean() > 0.5:
        return "it holds URLs or file paths"
    if len(text) and c.n_unique > 20 and text.str.len().mean() > 20 and text.str.contains(" ").mean() > 0.5:
        return "it looks like free text"
    if c.numeric_share < 0.5 and c.n_unique > 0.9 * max(c.n - c.n_missing, 1) and c.n_unique > 20:
        return "almost every row has its own value"
    return None


def _file_template(s: pd.Series, root: Path) -> str | None:
    """'{col}' or '{col}<suffix>' when the column's values name files under root."""
    sample = s.dropna().astype(str).str.strip().head(20).tolist()
    if not sample:
        return None
    for suffix in ("", *_IMAGE_EXT, *_SIGNAL_EXT):
        if sum((root / (v + suffix)).is_file() for v in sample) >= 0.8 * len(sample):
            return suffix
    return None


@dataclass
class Proposal:
    spec_text: str
    columns: list[Column]
    patient_id: str
    record_id: str | None
    label: str | None
    subgroups: list[str]
    identifiers: list[str]
    input_kind: str


def propose_spec(table: Path, images_root: Path | None = None, name: str | None = None) -> Proposal:
    """Look at ``table`` and write a starting spec (YAML text with comments) for it."""
    table = Path(table)
    df = read_table_as_strings(table, table_format(table.name, None))
    cols = _profile(df)
    for c in cols:
        why = _looks_like_identifier(c, df[c.name])
        if why:
            c.role, c.note = "identifier", why
        elif c.numeric_share < 0.5 and df[c.name].dropna().astype(str).str.match(_DATE).mean() > 0.8:
            c.role, c.note = "date", "a date/time: a quasi-identifier, not used as a feature"
    ids = [c for c in cols if c.role == "identifier"]
    # A record id is (nearly) unique: a few repeated rows are duplicates the dedupe step quarantines.
    unique_ids = [c for c in ids if c.n_missing == 0 and c.n_unique >= 0.95 * c.n and not _PATIENT_NAME.search(c.name)]
    unique_ids.sort(key=lambda c: (not (_ID_NAME.search(c.name) or _CAMEL_ID.search(c.name)), c.n_unique != c.n))
    repeated = [c for c in ids if c.n_missing == 0 and (c.n_unique < 0.95 * c.n or _PATIENT_NAME.search(c.name))]
    record = unique_ids[0] if unique_ids else None
    patient = next((c for c in repeated if _PATIENT_NAME.search(c.name)), repeated[0] if repeated else None)
    notes: dict[str, str] = {}
    if patient is None:
        if record is None:
            raise ValueError(f"{table.name}: no column looks like a patient or record id; add one (e.g. a pseudonymous patient number)")
        patient = record
        notes["patient_id"] = f"{record.name} is unique on every row: each record is taken for its own patient; check"
    else:
        notes["patient_id"] = f"{patient.name} repeats ({patient.n} rows, {patient.n_unique} distinct): check it is the patient"
    if record is not None:
        dup = record.n - record.n_unique
        notes["record_id"] = f"{record.name} is unique on every row" if not dup else f"{record.name}: {dup} repeated rows (kept once)"

    split_col = next((c for c in cols if c.role == "unused" and _SPLIT_NAME.match(c.name) and 2 <= c.n_unique <= 20), None)
    if split_col is None:
        split_col = next((c for c in cols if c.role == "unused" and {"train", "test"} <= {v.lower() for v in c.values}), None)
    if split_col is not None:
        split_col.role = "split"

    labels = [c for c in cols if c.role == "unused" and _LABEL_NAME.search(c.name) and 2 <= c.n_unique <= 20]
    labels.sort(key=lambda c: c.n_unique)
    label = labels[0] if labels else None
    if label is not None:
        label.role = "label"
    subgroups = [c for c in cols if c.role == "unused" and _SUBGROUP_NAME.search(c.name) and (c.n_unique <= 20 or c.numeric_share > 0.9)]
    subgroups += [c for c in labels[1:] if c.n_unique <= 20]  # another label-like column: a disease grouping
    for c in subgroups:
        c.role = "subgroup"

    root = images_root if images_root is not None else table.parent
    path_col, suffix = None, None
    for c in ids + [c for c in cols if c.role == "unused"]:
        found = _file_template(df[c.name], root)
        if found is not None:
            path_col, suffix = c, found
            break
    kind = "tabular"
    if path_col is not None:
        ext = suffix or Path(str(df[path_col.name].dropna().iloc[0])).suffix.lower()
        kind = "signal" if ext in _SIGNAL_EXT else "image"
        if path_col.role != "identifier":
            path_col.role, path_col.note = "identifier", "it names the input files (file names often embed ids)"

    features = [c for c in cols if c.role in ("unused", "subgroup") and (c.numeric_share > 0.9 or 2 <= c.n_unique <= 20)]
    if kind == "tabular":
        for c in features:
            if c.role == "unused":
                c.role = "feature"

    lines = [
        f"# Starting dataset spec written by `medaudit init-dataset {table.name}`: check every line marked CHECK,",
        "# then `medaudit ingest --spec THIS_FILE RAW_DIR` and read the quarantine. Keys: docs/OWN_DATA.md.",
        f"name: {name or _slug(table.stem)}",
        "description: ''",
        "tables:",
        f"  - path: {table.name}",
        "    columns: {}   # add contracts: {type: number, min: 0, max: 120}, {type: string, allowed: [...]}, pattern: ...",
        f"patient_id: {patient.name}   # CHECK: {notes['patient_id']}",
    ]
    if record is not None:
        lines.append(f"record_id: {record.name}   # {notes['record_id']}")
    secret = sorted({c.name for c in cols if c.role == "identifier"} - {patient.name, record.name if record else ""})
    lines.append(f"identifiers: [{', '.join(secret)}]   # CHECK: never printed; add names, free text, accession numbers")
    lines += _label_lines(label)
    lines += _input_lines(kind, path_col, suffix, root, table, df, features)
    lines.append("subgroups:" + ("" if subgroups else " {}   # CHECK: none found; add sex, age, ethnicity, ... if you have them"))
    for c in subgroups:
        lines += _subgroup_lines(c)
    if split_col is not None:
        test = [v for v in split_col.values if v.lower() in ("test", "testing", "holdout", "1 diagnostic")] or split_col.values[-1:]
        lines.append(f"split: {{column: {split_col.name}, test_values: {_flow(test)}}}   # CHECK: which values are the test split")
    else:
        lines.append("split: {test_fraction: 0.2, seed: 10}   # no split column found: a seeded split over patients")
    lines.append("filters: []   # e.g. - {column: age, min: 18}  or  - {expr: \"site in ['A', 'B'] and not is_missing(age)\"}")
    text = "\n".join(lines) + "\n"
    import yaml

    parse_spec(yaml.safe_load(text), f"proposal for {table.name}")  # what we write must load
    return Proposal(
        text,
        cols,
        patient.name,
        record.name if record else None,
        label.name if label else None,
        [c.name for c in subgroups],
        [c.name for c in cols if c.role == "identifier"],
        kind,
    )


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_") or "my-dataset"
    return s if s[0].isalnum() else "d" + s


def _q(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def _flow(values: list[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _label_lines(label: Column | None) -> list[str]:
    if label is None:
        return ["label: {kind: binary, column: CHANGE_ME, positive: ['1'], negative: ['0']}   # CHECK: no label-like column found"]
    low = {v.lower() for v in label.values}
    if label.n_unique == 2:
        pos = [v for v in label.values if v.lower() in ("1", "1.0", "true", "yes", "y", "positive")]
        neg = [v for v in label.values if v not in pos]
        if not pos:
            pos, neg = label.values[1:], label.values[:1]
        return [
            f"label: {{kind: binary, column: {label.name}, positive: {_flow(pos)}, negative: {_flow(neg)}}}   # CHECK: the positive class"
        ]
    del low
    return [f"label: {{kind: multiclass, column: {label.name}, classes: {_flow(sorted(label.values))}}}   # CHECK: classes and their order"]


def _input_lines(
    kind: str, path_col: Column | None, suffix: str | None, root: Path, table: Path, df: pd.DataFrame, features: list[Column]
) -> list[str]:
    if kind == "tabular":
        out = [
            "inputs:",
            "  kind: tabular",
            "  features:   # CHECK: drop leaks of the label (e.g. later outcomes) and anything not known at prediction time",
        ]
        for c in features:
            if c.numeric_share > 0.9:
                out.append(f"    - {{column: {c.name}}}" + (f"   # {c.n_missing} missing: training-split mean" if c.n_missing else ""))
            else:
                out.append(f"    - {{column: {c.name}, type: categorical, categories: {_flow(c.values)}}}")
        return out
    assert path_col is not None
    rel = _relative(root, table.parent)
    template = "{" + path_col.name + "}" + (suffix or "")
    if kind == "signal":
        first = root / (str(df[path_col.name].dropna().iloc[0]).strip() + (suffix or ""))
        shape = list(np.load(first, mmap_mode="r", allow_pickle=False).shape)
        return [
            f"inputs: {{kind: signal, path: '{template}', root: {_q(rel)}, format: numpy, shape: {shape}}}   # CHECK: [channels, samples]"
        ]
    return [
        f"inputs: {{kind: image, path: '{template}', root: {_q(rel)}, size: [64, 64], channels: 3}}   # CHECK: size and channels (1 or 3)"
    ]


def _relative(root: Path, base: Path) -> str:
    try:
        return str(Path(root).resolve().relative_to(Path(base).resolve())) or "."
    except ValueError:
        return str(Path(root).resolve())


def _subgroup_lines(c: Column) -> list[str]:
    key = _slug(c.name).replace("-", "_")
    if c.numeric_share > 0.9 and c.n_unique > 20:
        bands = "bins: [0, 18, 40, 65, 80], labels: ['<18', '18-39', '40-64', '65-79', '80+']"
        return [f"  {key}: {{column: {c.name}, {bands}, default: Unknown}}   # CHECK: bands"]
    values = ", ".join(f"{_q(v)}: {_q(v)}" for v in c.values[:20])
    return [f"  {key}: {{column: {c.name}, values: {{{values}}}, default: Other/Unknown}}   # CHECK: merge small groups"]


def summary_lines(p: Proposal) -> list[str]:
    """What init-dataset prints: one line per column (role, counts, never a value of an identifier)."""
    out = [f"{'column':28s} {'role':12s} {'distinct':>8s} {'missing':>8s}  note"]
    for c in p.columns:
        out.append(f"{c.name[:28]:28s} {c.role:12s} {c.n_unique:8d} {c.n_missing:8d}  {c.note}")
    return out

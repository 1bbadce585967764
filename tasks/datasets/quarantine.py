"""The quarantine ledger: every raw row or file excluded from a snapshot, with its reason (design D2), and the
repairs ledger beside it: every cell an adapter changed while keeping the row (e.g. MIMIC-IV-ED's
out-of-range vitals, set to missing or clipped as the benchmark does), with the rule applied."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

QUARANTINE_COLUMNS = ["source_file", "source_row", "stage", "column", "reason"]
# original: the cell as in the raw file; repaired: the value the model sees (after any imputation).
REPAIR_COLUMNS = ["source_file", "source_row", "column", "rule", "original", "repaired", "reason"]


@dataclass
class Quarantine:
    """Collects exclusions. ``source_row`` is the 1-based line number in the source file (header = 1),
    or -1 for a file-level entry. ``stage`` is contract | cohort | decode | dedupe."""

    entries: list[tuple[str, int, str, str, str]] = field(default_factory=list)
    repairs: list[tuple[str, int, str, str, float, float, str]] = field(default_factory=list)

    def add(self, source_file: str, source_row: int, stage: str, column: str, reason: str) -> None:
        self.entries.append((source_file, int(source_row), stage, column, reason))

    def add_rows(self, rows: pd.DataFrame, stage: str, column: str, reason: str | pd.Series) -> None:
        """Quarantine every row of ``rows`` (needs ``_source_file`` and ``_source_row``)."""
        reasons = reason if isinstance(reason, pd.Series) else pd.Series(reason, index=rows.index)
        for f, r, why in zip(rows["_source_file"], rows["_source_row"], reasons.loc[rows.index], strict=True):
            self.add(f, r, stage, column, why)

    def frame(self) -> pd.DataFrame:
        """One row per excluded source row; several reasons for one row are joined with '; '."""
        if not self.entries:
            return pd.DataFrame({c: pd.Series(dtype="object" if c != "source_row" else "int64") for c in QUARANTINE_COLUMNS})
        df = pd.DataFrame(self.entries, columns=QUARANTINE_COLUMNS)
        return df.groupby(["source_file", "source_row"], sort=True, as_index=False).agg(
            stage=("stage", "first"),
            column=("column", lambda s: ";".join(dict.fromkeys(s))),
            reason=("reason", lambda s: "; ".join(dict.fromkeys(s))),
        )

    def add_repairs(self, rows: pd.DataFrame, column: str, rule: str, original: pd.Series, repaired: pd.Series, reason: pd.Series) -> None:
        """Record a repair of ``column`` in every row of ``rows`` (needs ``_source_file``, ``_source_row``);
        ``original``, ``repaired`` and ``reason`` are aligned with ``rows``."""
        idx = rows.index
        cells = zip(rows["_source_file"], rows["_source_row"], original.loc[idx], repaired.loc[idx], reason.loc[idx], strict=True)
        self.repairs.extend((f, int(r), column, rule, float(o), float(v), why) for f, r, o, v, why in cells)

    def repairs_frame(self) -> pd.DataFrame:
        """One row per repaired cell, ordered by source file, line and column."""
        types = {"source_row": "int64", "original": "float64", "repaired": "float64"}
        if not self.repairs:
            return pd.DataFrame({c: pd.Series(dtype=types.get(c, "object")) for c in REPAIR_COLUMNS})
        return pd.DataFrame(self.repairs, columns=REPAIR_COLUMNS).sort_values(["source_file", "source_row", "column"], ignore_index=True)

    def rows(self) -> set[tuple[str, int]]:
        return {(f, r) for f, r, *_ in self.entries}

    def __len__(self) -> int:
        return len(self.rows())

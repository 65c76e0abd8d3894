"""What every bench section returns and how the suite prints and stores it.

A section is `async def run(ctx: Context) -> list[Table]`. Tables print as Markdown, so the same
text goes to the terminal, to `bench/results/<date>.md` and into the README. A fault drill that
does not reach its asserted outcome raises `DrillFailed`; the suite reports it and exits non-zero.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DrillFailed(AssertionError):
    """A fault drill's asserted outcome did not hold."""


@dataclass
class Context:
    """Shared by every section of one run."""

    quick: bool
    tmp: Path  # scratch directory, removed after the run
    logs: list[Path] = field(default_factory=list)  # every log file written; scanned for secrets at the end
    secrets: list[str] = field(default_factory=list)  # secret values handed to the processes under test

    def log_file(self, name: str) -> Path:
        """A fresh log path under tmp, registered for the secret scan."""
        path = self.tmp / f"{name}-{len(self.logs)}.log"
        self.logs.append(path)
        return path

    def secret(self, value: str) -> str:
        """Register a secret value the scan must never find, and return it."""
        self.secrets.append(value)
        return value


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *values: Any) -> None:
        self.rows.append(list(values))

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.01 else f"{value:.4f}"
    return str(value).replace("|", "\\|")


def pct(values: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000

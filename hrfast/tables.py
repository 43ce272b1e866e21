"""Markdown tables, the one form every report of hrfast takes (CLI, ``benchmarks/``)."""
from __future__ import annotations

from typing import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table: the first column left-aligned (names), the others right-aligned
    (figures). Cells are written with ``str``; format numbers before passing them."""
    rows = [list(map(str, r)) for r in rows]
    for r in rows:
        if len(r) != len(header):
            raise ValueError(f"each row needs {len(header)} cells, got {len(r)}: {r}")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])

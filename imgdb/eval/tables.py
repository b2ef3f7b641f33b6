"""Plain-text tables for the benchmark scripts' output (printed and saved beside the JSON)."""

from __future__ import annotations

from typing import Any


def render(title: str | None, header: list[str], rows: list[list[Any]]) -> str:
    """A table under an optional title line: first column left-aligned, the others right."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    lines = [line(cells[0]), line(["-" * w for w in widths]), *(line(r) for r in cells[1:])]
    return "\n".join(lines if title is None else [title, *lines])

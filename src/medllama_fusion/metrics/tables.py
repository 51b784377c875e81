"""Markdown tables: the one renderer of every table the library prints or writes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

__all__ = ["format_interval", "markdown_table"]


def _fmt_signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.4f}"


def _fmt_p(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def format_interval(low: float, high: float, signed: bool = False) -> str:
    """``[low, high]`` to 4 decimals (signed for differences); ``n/a`` when undefined."""
    if math.isnan(low):
        return "n/a"
    return f"[{low:+.4f}, {high:+.4f}]" if signed else f"[{low:.4f}, {high:.4f}]"


def markdown_table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    align: Sequence[Literal["left", "right"]] | None = None,
) -> str:
    """Render a table as Markdown: a header row, a rule, one line per row.

    Every table the library prints or writes goes through this function.

    Args:
        header: Column names.
        rows: Rows of cells, one cell per column (rendered with ``str``; ``|`` is escaped).
        align: Per column ``"left"`` or ``"right"``: cells are padded to the column's width and
            the rule carries the alignment (``---:`` for right). ``None`` (default): no padding,
            plain ``---`` rules.

    Returns:
        The table's lines joined by newlines (no trailing newline).

    Raises:
        ValueError: When a row or ``align`` does not have one entry per column.

    Examples:
        >>> print(markdown_table(["name", "n"], [["a", 1], ["bb", 22]]))
        | name | n |
        |---|---|
        | a | 1 |
        | bb | 22 |
        >>> print(markdown_table(["name", "n"], [["a", 1], ["bb", 22]], ["left", "right"]))
        | name |  n |
        |------|---:|
        | a    |  1 |
        | bb   | 22 |
    """
    columns = len(header)
    cells = [[str(cell).replace("|", "\\|") for cell in header]]
    for row in rows:
        if len(row) != columns:
            raise ValueError(f"every row needs {columns} cells (one per column), got {list(row)}.")
        cells.append([str(cell).replace("|", "\\|") for cell in row])
    if align is None:
        rule = "|" + "---|" * columns
        lines = ["| " + " | ".join(line) + " |" for line in cells]
        return "\n".join([lines[0], rule, *lines[1:]])
    if len(align) != columns:
        raise ValueError(f"align needs {columns} entries (one per column), got {list(align)}.")
    widths = [max(len(line[i]) for line in cells) for i in range(columns)]

    def padded(line: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                cell.rjust(width) if side == "right" else cell.ljust(width)
                for cell, width, side in zip(line, widths, align, strict=True)
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            "-" * (width + 1) + ":" if side == "right" else "-" * (width + 2)
            for width, side in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([padded(cells[0]), rule, *(padded(line) for line in cells[1:])])


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"

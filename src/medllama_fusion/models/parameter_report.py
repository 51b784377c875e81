"""Readable rendering of :meth:`FusionModel.trainable_parameter_report`: a title and a table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medllama_fusion.metrics import markdown_table

__all__ = ["format_parameter_report"]


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}%" if whole else "n/a"


def format_parameter_report(report: Mapping[str, Any]) -> str:
    """Render a trainable-parameter report as a title line and an aligned Markdown table.

    One row per group (``lora`` or a top-level module such as ``backbone``, ``vision``,
    ``head``) with its trainable and total parameter counts, the trainable share of the group
    and the group's share of all trainable parameters, then a total row.

    Args:
        report: The dict returned by ``FusionModel.trainable_parameter_report()``
            (``trainable``, ``total`` and ``groups: {name: {"trainable", "total"}}``).

    Returns:
        The text, e.g. ``"Trainable parameters: 272,590 of 387,534 (70.34%)"`` and the table.

    Examples:
        >>> groups = {"backbone": {"trainable": 0, "total": 30},
        ...           "head": {"trainable": 10, "total": 10}}
        >>> print(format_parameter_report({"trainable": 10, "total": 40, "groups": groups}))
        Trainable parameters: 10 of 40 (25.00%)
        | group    | trainable | total | trainable % | share of trainable |
        |----------|----------:|------:|------------:|-------------------:|
        | backbone |         0 |    30 |       0.00% |              0.00% |
        | head     |        10 |    10 |     100.00% |            100.00% |
        | total    |        10 |    40 |      25.00% |            100.00% |
    """
    trainable, total = int(report["trainable"]), int(report["total"])
    header = ["group", "trainable", "total", "trainable %", "share of trainable"]
    rows = [
        [
            str(name),
            f"{int(g['trainable']):,}",
            f"{int(g['total']):,}",
            _percent(int(g["trainable"]), int(g["total"])),
            _percent(int(g["trainable"]), trainable),
        ]
        for name, g in report["groups"].items()
    ]
    rows.append(["total", f"{trainable:,}", f"{total:,}", _percent(trainable, total), "100.00%"])
    title = f"Trainable parameters: {trainable:,} of {total:,} ({_percent(trainable, total)})"
    table = markdown_table(header, rows, align=["left", "right", "right", "right", "right"])
    return f"{title}\n{table}"

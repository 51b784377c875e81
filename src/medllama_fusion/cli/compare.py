"""``medllama-fusion compare A.csv B.csv``: the paired AUROC difference of two models.

Both files are ``predictions.csv`` files written by ``medllama-fusion predict`` on the same
labelled test split: ``id``, one probability column per label, optionally ``<label>_decision``
columns, then ``<label>_target`` (the true 0/1 labels) and ``group`` (the report of each row).
The rows are matched by ``id`` (their order does not matter), and
:func:`medllama_fusion.metrics.compare` gives the difference A - B of every class's AUROC and of
the macro mean, with its interval and p-value, clustered by the report groups. The table is
printed and, with ``--output``, written as Markdown (``.md``) or CSV (``.csv``).

Files saved by a spreadsheet program are read too (a UTF-8 byte-order mark, Windows line
endings). A file that cannot be compared raises a :class:`PredictionFileError` naming the file
and what is wrong (different ids, different labels, no probability or label columns, a value
that is not a number), which the command line prints as one message (exit status 2).

The module imports torch only once both files are read, so ``--help`` and input errors are
answered quickly.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jsonargparse import ArgumentParser

from medllama_fusion.errors import InputError

if TYPE_CHECKING:
    from medllama_fusion.metrics import Comparison

__all__ = [
    "PredictionFile",
    "PredictionFileError",
    "build_parser",
    "compare_files",
    "main",
    "read_predictions",
]

PROG = "medllama-fusion compare"
ID_COLUMN = "id"
GROUP_COLUMN = "group"
TARGET_SUFFIX = "_target"
DECISION_SUFFIX = "_decision"
_EXAMPLES = 3
_RERUN = (
    "rerun `medllama-fusion predict` with this version of medllama-fusion on the labelled test "
    "split"
)


class PredictionFileError(InputError):
    """A predictions file that cannot be compared: unreadable, incomplete, or not a match.

    The message names the file (and line and column for a bad value) and what to do.
    """


@dataclass
class PredictionFile:
    """The contents of one ``predictions.csv``.

    Attributes:
        path: The file.
        label_names: Labels, in the order of the probability columns.
        ids: Row ids, in file order.
        probs: Per row, one probability per label.
        targets: Per row, one 0/1 label per label.
        groups: Per row, its report group, or ``None`` when the file has no ``group`` column.
    """

    path: Path
    label_names: list[str]
    ids: list[str]
    probs: list[list[float]]
    targets: list[list[int]]
    groups: list[str] | None


def _examples(values: Sequence[str] | set[str]) -> str:
    shown = sorted(values)[:_EXAMPLES]
    more = len(values) - len(shown)
    return ", ".join(repr(v) for v in shown) + (f" and {more} more" if more > 0 else "")


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise PredictionFileError(
            f"{path}, line {line}, column {column!r}: {text!r} is not a number."
        )
    return value


def read_predictions(path: str | Path) -> PredictionFile:
    """Read a ``predictions.csv`` written by ``medllama-fusion predict`` (with true labels).

    Args:
        path: The file (UTF-8, optionally with a byte-order mark; any line endings).

    Returns:
        Its :class:`PredictionFile`.

    Raises:
        FileNotFoundError: When the file does not exist.
        PredictionFileError: When it has no ``id``, probability or ``<label>_target`` columns,
            a repeated id, or a value that is not a number (resp. not 0 or 1).
    """
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = [cell.strip() for cell in next(reader, [])]
        if ID_COLUMN not in header:
            raise PredictionFileError(
                f"{path} has no {ID_COLUMN!r} column (header: {header[:6]}): it is not a "
                "predictions.csv written by `medllama-fusion predict`."
            )
        targets = [c.removesuffix(TARGET_SUFFIX) for c in header if c.endswith(TARGET_SUFFIX)]
        special = {ID_COLUMN, GROUP_COLUMN}
        labels = [
            c
            for c in header
            if c not in special and not c.endswith((TARGET_SUFFIX, DECISION_SUFFIX)) and c
        ]
        if not labels:
            raise PredictionFileError(
                f"{path} has no probability columns (header: {header[:6]}): it is not a "
                "predictions.csv written by `medllama-fusion predict`."
            )
        if not targets:
            raise PredictionFileError(
                f"{path} has no true labels (no `<label>{TARGET_SUFFIX}` columns), so its "
                f"predictions cannot be scored: {_RERUN}."
            )
        if set(labels) != set(targets):
            raise PredictionFileError(
                f"{path}: the probability columns ({_examples(labels)}) and the "
                f"`{TARGET_SUFFIX}` columns ({_examples(targets)}) name different labels; "
                f"{_RERUN}."
            )
        where = {name: i for i, name in enumerate(header)}
        group_at = where.get(GROUP_COLUMN)
        ids: list[str] = []
        probs: list[list[float]] = []
        truth: list[list[int]] = []
        groups: list[str] = []
        first_line: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank lines, e.g. at the end of a file saved by a spreadsheet
            if len(row) < len(header):
                raise PredictionFileError(
                    f"{path}, line {line}: {len(row)} values for {len(header)} columns."
                )
            example = row[where[ID_COLUMN]].strip()
            if example in first_line:
                raise PredictionFileError(
                    f"{path}, line {line}: id {example!r} appears twice (first on line "
                    f"{first_line[example]})."
                )
            first_line[example] = line
            ids.append(example)
            probs.append([_number(path, line, n, row[where[n]]) for n in labels])
            values = []
            for name in labels:
                column = name + TARGET_SUFFIX
                value = _number(path, line, column, row[where[column]])
                if value not in (0.0, 1.0):
                    raise PredictionFileError(
                        f"{path}, line {line}, column {column!r}: "
                        f"{row[where[column]]!r} is not 0 or 1."
                    )
                values.append(int(value))
            truth.append(values)
            if group_at is not None:
                groups.append(row[group_at].strip())
    if not ids:
        raise PredictionFileError(f"{path} has a header but no rows.")
    return PredictionFile(
        path=path,
        label_names=labels,
        ids=ids,
        probs=probs,
        targets=truth,
        groups=groups if group_at is not None and any(groups) else None,
    )


def _same_partition(first: Sequence[str], second: Sequence[str]) -> bool:
    """Whether two group columns (of the same rows) put the rows into the same groups."""
    pairs = set(zip(first, second, strict=True))
    return len(pairs) == len(set(first)) == len(set(second))


def compare_files(
    file_a: str | Path,
    file_b: str | Path,
    confidence: float = 0.95,
    min_positives: int | None = None,
) -> Comparison:
    """Compare two models' ``predictions.csv`` files of the same test split.

    Args:
        file_a: Predictions of model A.
        file_b: Predictions of model B (the same ids, labels and true labels).
        confidence: Confidence level of the intervals.
        min_positives: Fewest positive and negative reports of a class with an interval and in
            the macro mean (``None``: :data:`~medllama_fusion.metrics.DEFAULT_MIN_POSITIVES`).

    Returns:
        The :class:`~medllama_fusion.metrics.Comparison` of A - B, models named ``A`` and ``B``.

    Raises:
        PredictionFileError: When a file cannot be read or the two do not match.
    """
    a, b = read_predictions(file_a), read_predictions(file_b)
    if set(a.label_names) != set(b.label_names):
        raise PredictionFileError(
            f"{a.path} and {b.path} have different labels: {a.label_names} in the first, "
            f"{b.label_names} in the second; compare models trained for the same labels."
        )
    only_a, only_b = set(a.ids) - set(b.ids), set(b.ids) - set(a.ids)
    if only_a or only_b:
        parts = []
        for extra, file in ((only_a, a), (only_b, b)):
            if extra:
                parts.append(f"{len(extra)} only in {file.path} ({_examples(extra)})")
        raise PredictionFileError(
            f"{a.path} and {b.path} are not predictions of the same rows: "
            + "; ".join(parts)
            + ". Run `medllama-fusion predict` for both models on the same test split."
        )
    row_of = {example: i for i, example in enumerate(b.ids)}
    order = [row_of[example] for example in a.ids]
    column_of = {name: j for j, name in enumerate(b.label_names)}
    columns = [column_of[name] for name in a.label_names]
    probs_b = [[b.probs[i][j] for j in columns] for i in order]
    targets_b = [[b.targets[i][j] for j in columns] for i in order]
    if targets_b != a.targets:
        i, j = next(
            (i, j)
            for i, row in enumerate(a.targets)
            for j, value in enumerate(row)
            if targets_b[i][j] != value
        )
        raise PredictionFileError(
            f"{a.path} and {b.path} disagree on the true labels (id {a.ids[i]!r}, "
            f"{a.label_names[j]}: {a.targets[i][j]} vs {targets_b[i][j]}): they are not "
            "predictions of the same test split."
        )
    groups = a.groups
    if b.groups is not None:
        groups_b = [b.groups[i] for i in order]
        if groups is not None and not _same_partition(groups, groups_b):
            raise PredictionFileError(
                f"{a.path} and {b.path} group the rows into different reports (column "
                f"{GROUP_COLUMN!r}): they are not predictions of the same test split."
            )
        groups = groups if groups is not None else groups_b

    import torch

    from medllama_fusion.metrics import DEFAULT_MIN_POSITIVES, compare

    group_ids = None
    if groups is not None:
        codes: dict[str, int] = {}
        group_ids = torch.tensor([codes.setdefault(g, len(codes)) for g in groups])
    return compare(
        torch.tensor(a.probs, dtype=torch.float64),
        torch.tensor(probs_b, dtype=torch.float64),
        torch.tensor(a.targets),
        group_ids,
        label_names=a.label_names,
        confidence=confidence,
        min_positives=DEFAULT_MIN_POSITIVES if min_positives is None else min_positives,
        names=("A", "B"),
    )


def build_parser() -> ArgumentParser:
    """The argument parser of ``medllama-fusion compare`` (jsonargparse)."""
    parser = ArgumentParser(
        prog=PROG,
        description="Paired AUROC difference (A - B) of two models' predictions.csv files of "
        "the same labelled test split (written by `medllama-fusion predict`): per class and "
        "macro mean, with intervals and p-values clustered by report.",
    )
    parser.add_argument("predictions_a", type=str, help="predictions.csv of model A")
    parser.add_argument("predictions_b", type=str, help="predictions.csv of model B")
    parser.add_argument(
        "--confidence", type=float, default=0.95, help="confidence level of the intervals"
    )
    parser.add_argument(
        "--min_positives",
        type=int | None,
        default=None,
        help="fewest positive and negative reports of a class with an interval and in the "
        "macro mean (default: the library's, 5)",
    )
    parser.add_argument(
        "--output",
        type=str | None,
        default=None,
        help="also write the table to this file: Markdown (.md) or CSV (.csv)",
    )
    return parser


def _write(result: Comparison, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        rows = result.rows()
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text(result.table() + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> Comparison:
    """Run ``medllama-fusion compare`` and return the comparison.

    Args:
        argv: Arguments after ``compare``; the process's arguments if ``None``.

    Returns:
        The :class:`~medllama_fusion.metrics.Comparison`.

    Raises:
        PredictionFileError: For files that cannot be compared or an ``--output`` that is
            neither ``.md`` nor ``.csv``.
    """
    config = build_parser().parse_args(None if argv is None else list(argv))
    output = Path(config.output) if config.output else None
    if output is not None and output.suffix.lower() not in (".md", ".csv"):
        raise PredictionFileError(
            f"--output {output}: write the table to a .md (Markdown) or .csv file."
        )
    if not 0.0 < config.confidence < 1.0:
        raise PredictionFileError(
            f"--confidence {config.confidence}: use a level between 0 and 1, e.g. 0.95."
        )
    if config.min_positives is not None and config.min_positives < 1:
        raise PredictionFileError(f"--min_positives {config.min_positives}: use 1 or more.")
    result = compare_files(
        config.predictions_a, config.predictions_b, config.confidence, config.min_positives
    )
    print(f"A: {Path(config.predictions_a).resolve()}")
    print(f"B: {Path(config.predictions_b).resolve()}\n")
    print(result.table(), flush=True)
    if output is not None:
        _write(result, output)
        print(f"\n{PROG}: table written to {output.resolve()}", flush=True)
    return result

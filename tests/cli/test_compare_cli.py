"""``medllama-fusion compare A.csv B.csv``: hand-written and real predictions files, bad inputs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from medllama_fusion.cli.console import top_level_help
from medllama_fusion.cli.main import DEBUG_ENV, cli_main
from medllama_fusion.cli.main import main as run_cli
from medllama_fusion.metrics import compare

from .conftest import cli_args

LABELS = ["Atelectasis", "Cardiomegaly", "Pleural-Effusion"]


def _data(seed: int = 0) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """80 rows in 40 two-image reports: ids, scores of two models, labels, report groups."""
    g = torch.Generator().manual_seed(seed)
    reports = (torch.rand(40, 3, generator=g) < torch.tensor([0.3, 0.4, 0.25])).long()
    target = reports.repeat_interleave(2, dim=0)
    signal = target.double() * 1.5 + torch.randn(80, 3, generator=g, dtype=torch.float64)
    probs_a = torch.sigmoid(signal)
    probs_b = torch.sigmoid(signal + torch.randn(80, 3, generator=g, dtype=torch.float64))
    ids = [f"CXR{r}_IM-{r:04d}-{i}" for r in range(40) for i in (1, 2)]
    return ids, probs_a, probs_b, target, [r for r in range(40) for _ in (1, 2)]


def write_predictions(
    path: Path,
    ids: list[str],
    probs: torch.Tensor,
    target: torch.Tensor | None,
    groups: list[int] | None,
    labels: list[str] = LABELS,
    *,
    decisions: bool = False,
    excel: bool = False,
    order: list[int] | None = None,
    columns: list[int] | None = None,
) -> Path:
    """A predictions.csv as a user's file would look: written with the csv module.

    ``excel``: as saved by a spreadsheet program (UTF-8 with a byte-order mark, CRLF line
    endings, quoted cells, a blank last line); otherwise plain LF lines. ``order`` permutes the
    rows, ``columns`` the labels.
    """
    rows = order if order is not None else list(range(len(ids)))
    cols = columns if columns is not None else list(range(len(labels)))
    header = ["id", *(labels[c] for c in cols)]
    if decisions:
        header += [f"{labels[c]}_decision" for c in cols]
    if target is not None:
        header += [f"{labels[c]}_target" for c in cols]
    if groups is not None:
        header.append("group")
    encoding = "utf-8-sig" if excel else "utf-8"
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(
            handle,
            lineterminator="\r\n" if excel else "\n",
            quoting=csv.QUOTE_ALL if excel else csv.QUOTE_MINIMAL,
        )
        writer.writerow(header)
        for i in rows:
            row: list[object] = [ids[i], *(f"{float(probs[i, c]):.6f}" for c in cols)]
            if decisions:
                row += [int(probs[i, c] >= 0.5) for c in cols]
            if target is not None:
                row += [int(target[i, c]) for c in cols]
            if groups is not None:
                row.append(groups[i])
            writer.writerow(row)
        if excel:
            writer.writerow([])
    return path


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        run_cli(args)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_equals_the_function(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rows in another order, labels in another order, an Excel-saved file: same numbers."""
    ids, probs_a, probs_b, target, groups = _data()
    file_a = write_predictions(tmp_path / "a.csv", ids, probs_a, target, groups)
    file_b = write_predictions(
        tmp_path / "b.csv",
        ids,
        probs_b,
        target,
        groups,
        decisions=True,
        excel=True,
        order=list(reversed(range(len(ids)))),
        columns=[2, 0, 1],
    )
    assert file_b.read_bytes().startswith(b"\xef\xbb\xbf") and b"\r\n" in file_b.read_bytes()
    out_md, out_csv = tmp_path / "out" / "diff.md", tmp_path / "diff.csv"
    code, printed, err = _cli(
        ["compare", str(file_a), str(file_b), "--output", str(out_md)], capsys
    )
    assert code == 0, err
    rounded_a = torch.tensor([[round(float(p), 6) for p in row] for row in probs_a.tolist()])
    rounded_b = torch.tensor([[round(float(p), 6) for p in row] for row in probs_b.tolist()])
    expected = compare(
        rounded_a.double(),
        rounded_b.double(),
        target,
        torch.tensor(groups),
        LABELS,
        min_positives=5,
    )
    table = expected.table()
    assert table in printed
    assert f"A: {file_a.resolve()}" in printed and f"B: {file_b.resolve()}" in printed
    assert out_md.read_text() == table + "\n"
    assert "| mean |" in table and "40 report groups" in table
    code, _, err = _cli(
        ["compare", str(file_a), str(file_b), "--output", str(out_csv), "--confidence", "0.9"],
        capsys,
    )
    assert code == 0, err
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    narrower = compare(
        rounded_a.double(), rounded_b.double(), target, torch.tensor(groups), LABELS, 0.9
    )
    assert [row["label"] for row in rows] == [*LABELS, "mean"]
    assert [float(row["ci_low"]) for row in rows] == pytest.approx(
        [*narrower.ci_low, narrower.mean_ci[0]], nan_ok=True
    )
    assert [float(row["p_value"]) for row in rows] == pytest.approx(
        [*narrower.p_value, narrower.mean_p_value], nan_ok=True
    )


def test_a_file_against_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids, probs_a, _, target, groups = _data(1)
    path = write_predictions(tmp_path / "a.csv", ids, probs_a, target, groups)
    code, printed, err = _cli(["compare", str(path), str(path), "--min_positives", "3"], capsys)
    assert code == 0, err
    mean = next(line for line in printed.splitlines() if line.startswith("| mean |"))
    assert "| +0.0000 | [+0.0000, +0.0000] | 1.0000 |" in mean
    assert "with >= 3 positive and negative reports" in mean


def _bad_number(tmp: Path) -> tuple[list[str], list[str]]:
    ids, probs_a, probs_b, target, groups = _data()
    a = write_predictions(tmp / "A.csv", ids, probs_a, target, groups)
    b = write_predictions(tmp / "B.csv", ids, probs_b, target, groups, excel=True)
    text = b.read_text(encoding="utf-8-sig").splitlines()
    cells = text[3].split(",")
    cells[2] = '"0,43"'  # a decimal comma in the Cardiomegaly column of line 4
    text[3] = ",".join(cells)
    b.write_text("\r\n".join(text) + "\r\n", encoding="utf-8-sig")
    return [str(a), str(b)], [str(b), "line 4", "column 'Cardiomegaly'", "'0,43' is not a number"]


def _bad_label(tmp: Path) -> tuple[list[str], list[str]]:
    ids, probs_a, probs_b, target, groups = _data()
    a = write_predictions(tmp / "A.csv", ids, probs_a, target, groups)
    b = write_predictions(tmp / "B.csv", ids, probs_b, target.clone(), groups)
    text = b.read_text().splitlines()
    cells = text[5].split(",")
    cells[4] = "2"  # Atelectasis_target of line 6
    text[5] = ",".join(cells)
    b.write_text("\n".join(text) + "\n")
    return [str(a), str(b)], [str(b), "line 6", "column 'Atelectasis_target'", "'2' is not 0 or 1"]


def _other_ids(tmp: Path) -> tuple[list[str], list[str]]:
    ids, probs_a, probs_b, target, groups = _data()
    a = write_predictions(tmp / "A.csv", ids, probs_a, target, groups)
    other = [*ids[:-2], "extra-1", ids[-1]]  # B lacks one id of A and has one of its own
    b = write_predictions(tmp / "B.csv", other, probs_b, target, groups)
    return [str(a), str(b)], [
        "not predictions of the same rows",
        f"1 only in {a} ('{ids[-2]}')",
        f"1 only in {b} ('extra-1')",
        "medllama-fusion predict",
    ]


def _other_labels(tmp: Path) -> tuple[list[str], list[str]]:
    ids, probs_a, probs_b, target, groups = _data()
    a = write_predictions(tmp / "A.csv", ids, probs_a, target, groups)
    labels = ["Atelectasis", "Cardiomegaly", "Edema"]
    b = write_predictions(tmp / "B.csv", ids, probs_b, target, groups, labels)
    return [str(a), str(b)], [
        "different labels",
        str(LABELS),
        str(labels),
        str(a),
        str(b),
    ]


def _no_probabilities(tmp: Path) -> tuple[list[str], list[str]]:
    ids, probs_a, _, target, groups = _data()
    a = write_predictions(tmp / "A.csv", ids, probs_a, target, groups)
    b = tmp / "B.csv"
    with open(b, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *(f"{n}_target" for n in LABELS), "group"])
        for i, example in enumerate(ids):
            writer.writerow([example, *target[i].tolist(), groups[i]])
    return [str(a), str(b)], [f"{b} has no probability columns", "medllama-fusion predict"]


def _no_targets(tmp: Path) -> tuple[list[str], list[str]]:
    ids, probs_a, probs_b, target, groups = _data()
    a = write_predictions(tmp / "A.csv", ids, probs_a, None, None, decisions=True)
    b = write_predictions(tmp / "B.csv", ids, probs_b, target, groups)
    return [str(a), str(b)], [
        f"{a} has no true labels",
        "_target",
        "rerun `medllama-fusion predict`",
        "labelled test split",
    ]


def _missing_file(tmp: Path) -> tuple[list[str], list[str]]:
    ids, probs_a, _, target, groups = _data()
    a = write_predictions(tmp / "A.csv", ids, probs_a, target, groups)
    return [str(a), str(tmp / "nope.csv")], ["No such file or directory", str(tmp / "nope.csv")]


def _bad_output(tmp: Path) -> tuple[list[str], list[str]]:
    ids, probs_a, _, target, groups = _data()
    a = write_predictions(tmp / "A.csv", ids, probs_a, target, groups)
    return [str(a), str(a), "--output", str(tmp / "t.xlsx")], ["--output", ".md", ".csv"]


BAD: dict[str, Callable[[Path], tuple[list[str], list[str]]]] = {
    "unreadable number": _bad_number,
    "label not 0/1": _bad_label,
    "different ids": _other_ids,
    "different labels": _other_labels,
    "no probability columns": _no_probabilities,
    "no target columns": _no_targets,
    "missing file": _missing_file,
    "bad output suffix": _bad_output,
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_give_one_message(
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    args, expected = BAD[case](tmp_path)
    code, out, err = _cli(["compare", *args], capsys)
    assert code == 2, (out, err)
    assert err.startswith("medllama-fusion: error: ")
    message = err.splitlines()[0]
    for part in expected:
        assert part in message, (part, message)
    assert "Traceback" not in err and "| mean |" not in out


def test_help_lists_and_explains_compare(capsys: pytest.CaptureFixture[str]) -> None:
    assert "  compare   paired AUROC difference" in top_level_help()
    code, out, _ = _cli(["compare", "--help"], capsys)
    assert code == 0
    for option in ("predictions_a", "predictions_b", "--confidence", "--min_positives", "--output"):
        assert option in out


def test_real_predictions_files(demo_root: Path, tiny_conf: Path, tmp_path: Path) -> None:
    """Two tiny models fitted and predicted by the CLI, compared by ``medllama-fusion compare``
    run as a new process in an empty folder."""
    written = []
    for name, seed in (("a", "0"), ("b", "1")):
        out = tmp_path / name
        short = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
        cli_main(cli_args("fit", tiny_conf, demo_root, out, "--seed_everything", seed, *short))
        (ckpt,) = sorted(out.rglob("last.ckpt"))
        cli = cli_main(
            cli_args("predict", tiny_conf, demo_root, out / "predict", "--ckpt_path", str(ckpt))
        )
        (path,) = sorted((out / "predict").rglob("predictions.csv"))
        written.append(path)
    names = cli.datamodule.label_names
    with open(written[0], newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][0] == "id" and rows[0][1 : 1 + len(names)] == names
    assert rows[0][-len(names) - 1 :] == [*(f"{n}_target" for n in names), "group"]
    assert all(set(row[-len(names) - 1 : -1]) <= {"0", "1"} for row in rows[1:])
    assert all(row[-1].isdigit() for row in rows[1:])

    clean = tmp_path / "clean"
    clean.mkdir()
    env = {**os.environ, "MEDLLAMA_FUSION_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop(DEBUG_ENV, None)
    args = [str(written[0]), str(written[1]), "--min_positives", "1", "--output", "diff.md"]
    result = subprocess.run(
        [sys.executable, "-m", "medllama_fusion", "compare", *args],
        cwd=clean,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (clean / "diff.md").read_text()
    assert table.startswith("| label | AUROC A | AUROC B | A - B | 95% CI | p-value |")
    assert table.strip() in result.stdout and "| mean |" in table
    assert sum(f"| {n} |" in table for n in names) == len(names)

    # the same numbers as the function on the files' arrays
    def arrays(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with open(path, newline="") as handle:
            body = list(csv.reader(handle))[1:]
        body.sort(key=lambda row: row[0])
        probs = torch.tensor([[float(v) for v in row[1 : 1 + len(names)]] for row in body])
        target = torch.tensor([[int(v) for v in row[-len(names) - 1 : -1]] for row in body])
        return probs.double(), target, torch.tensor([int(row[-1]) for row in body])

    probs_a, target, groups = arrays(written[0])
    probs_b, _, _ = arrays(written[1])
    expected = compare(probs_a, probs_b, target, groups, names, min_positives=1)
    assert table == expected.table() + "\n"

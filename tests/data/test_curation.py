from __future__ import annotations

import logging
import warnings

import pytest

from medllama_fusion.data.curation import CurationSettings, apply_bad_input_policy, check_splits
from medllama_fusion.datasets.base import FusionSample
from medllama_fusion.datasets.problems import DataProblem, DataProblemError, format_problems

PROBLEMS = [
    DataProblem("missing_image", "CXR1", "/data/a.png", "CXR1"),
    DataProblem("malformed_xml", "ecgen-radiology/7.xml", "mismatched tag"),
    DataProblem("missing_image", "CXR2", "/data/b.png", "CXR2"),
    DataProblem("empty_report", "CXR3", "", "CXR3"),
]


def test_error_policy_raises_once_listing_everything_grouped() -> None:
    with pytest.raises(DataProblemError) as info:
        apply_bad_input_policy(PROBLEMS, "error", source="root X")
    message = str(info.value)
    assert "4 problem(s) in root X" in message
    assert message.index("missing_image (2)") < message.index("malformed_xml (1)")
    for needle in ("CXR1: /data/a.png", "CXR2: /data/b.png", "ecgen-radiology/7.xml", "CXR3"):
        assert needle in message
    assert "bad_input='skip'" in message
    assert info.value.problems == PROBLEMS
    assert isinstance(info.value, ValueError)


def test_skip_policy_logs_once_and_returns_ids(caplog: pytest.LogCaptureFixture) -> None:
    """The report goes to one channel, logging (no UserWarning repeating it)."""
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drop = apply_bad_input_policy(PROBLEMS, "skip")
    assert drop == {"CXR1", "CXR2", "CXR3"}
    (record,) = [r for r in caplog.records if "dropping 3 sample" in r.getMessage()]
    assert record.levelno == logging.WARNING and "ecgen-radiology/7.xml" in record.getMessage()
    assert not [w for w in caught if "dropping" in str(w.message)]


def test_fatal_kinds_raise_even_when_skipping() -> None:
    problems = [DataProblem("missing_label_column", "x.csv:Edema")]
    with pytest.raises(DataProblemError, match="missing_label_column"):
        apply_bad_input_policy(problems, "skip", fatal_kinds=["missing_label_column"])


def test_no_problems_and_policy_check() -> None:
    assert apply_bad_input_policy([], "error") == set()
    with pytest.raises(ValueError, match="bad_input"):
        apply_bad_input_policy([], "ignore")
    with pytest.raises(
        ValueError, match="split_leak='ignore' is not supported; use one of 'error'"
    ):
        CurationSettings(split_leak="ignore")  # type: ignore[arg-type]


def test_format_truncates_per_kind() -> None:
    many = [DataProblem("missing_image", f"id{i}") for i in range(5)]
    text = format_problems(many, max_per_kind=2)
    assert "id1" in text and "id2" not in text and "... and 3 more" in text


def test_rare_classes_are_reported_once_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    """One channel: a log record (no UserWarning repeating it with a file and line)."""

    def split(name: str, positives: int) -> list[FusionSample]:
        return [
            FusionSample(f"{name}{i}", None, "text", (float(i < positives), 1.0)) for i in range(8)
        ]

    splits = {"train": split("tr", 6), "val": split("va", 2), "test": split("te", 6)}
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_splits(splits, ["a", "b"], CurationSettings(), "data X", {})
    rare = [r for r in caplog.records if "fewer than 5 positives" in r.getMessage()]
    assert len(rare) == 1 and rare[0].levelno == logging.WARNING
    assert "val: a (2)" in rare[0].getMessage() and "test:" not in rare[0].getMessage()
    assert any("positives per class and split" in r.getMessage() for r in caplog.records)
    assert not caught

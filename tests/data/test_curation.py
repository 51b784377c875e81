from __future__ import annotations

import logging

import pytest

from medllama_fusion.data.curation import CurationSettings, apply_bad_input_policy
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


def test_skip_policy_logs_and_returns_ids(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="dropping 3 sample"):
        drop = apply_bad_input_policy(PROBLEMS, "skip")
    assert drop == {"CXR1", "CXR2", "CXR3"}
    assert "ecgen-radiology/7.xml" in caplog.text


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

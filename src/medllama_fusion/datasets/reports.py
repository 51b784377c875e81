"""Report text as the sources write it: ``FINDINGS : ... IMPRESSION : ...``.

* :func:`format_report` joins report sections as ``"FINDINGS : ... IMPRESSION : ..."`` (the
  format of the MONAI TransCheX OpenI CSVs), optionally removing the OpenI anonymisation
  tokens ``XXXX`` (:func:`strip_anonymization`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SECTION_TITLES: dict[str, str] = {
    "findings": "FINDINGS",
    "impression": "IMPRESSION",
    "indication": "INDICATION",
    "comparison": "COMPARISON",
}
"""Section key → title used by :func:`format_report`."""

_ANONYMIZATION = re.compile(r"\s*-?\bX{3,}\b")


def strip_anonymization(text: str) -> str:
    """Remove the OpenI anonymisation tokens (``XXXX``, also when hyphen-attached: ``x-XXXX``).

    Args:
        text: Report text.

    Returns:
        The text without the tokens, whitespace collapsed.
    """
    return " ".join(_ANONYMIZATION.sub("", text).split())


def format_report(
    findings: str,
    impression: str,
    indication: str | None = None,
    comparison: str | None = None,
    sections: Sequence[str] = ("findings", "impression"),
    strip_xxxx: bool = False,
) -> str:
    """Join report sections as ``"FINDINGS : <text> IMPRESSION : <text>"``.

    Empty sections are left out.

    Args:
        findings: FINDINGS text.
        impression: IMPRESSION text.
        indication: INDICATION text.
        comparison: COMPARISON text.
        sections: Which sections to include, in order; keys of :data:`SECTION_TITLES`.
        strip_xxxx: Remove the ``XXXX`` anonymisation tokens (default: keep them verbatim).

    Returns:
        The formatted report.

    Raises:
        ValueError: If ``sections`` names an unknown section.
    """
    texts = {
        "findings": findings,
        "impression": impression,
        "indication": indication or "",
        "comparison": comparison or "",
    }
    parts = []
    for section in sections:
        key = section.lower()
        if key not in SECTION_TITLES:
            raise ValueError(
                f"unknown report section {section!r} in sections; use any of {list(SECTION_TITLES)}"
            )
        text = " ".join(texts[key].split())
        if strip_xxxx:
            text = strip_anonymization(text)
        if text:
            parts.append(f"{SECTION_TITLES[key]} : {text}")
    return " ".join(parts)


__all__ = ["SECTION_TITLES", "format_report", "strip_anonymization"]

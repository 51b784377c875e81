"""Griffe extension: show Sphinx cross-reference roles in docstrings as code.

The package's docstrings use roles such as ``:class:`~medllama_fusion.errors.InputError```, which
Markdown would print verbatim; this turns each into a code span (the last dotted component when
the target starts with ``~``, as Sphinx does). A hand-written extension because no published one
does only this.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`"
)


def _code(match: re.Match[str]) -> str:
    target = match["target"]
    return f"`{target.rsplit('.', 1)[-1] if match['tilde'] else target}`"


def roles_to_code(text: str) -> str:
    """Return ``text`` with every Sphinx role turned into a Markdown code span."""
    return ROLE.sub(_code, text)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring to Markdown code spans."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the roles in ``obj``'s docstring."""
        if obj.docstring is not None:
            obj.docstring.value = roles_to_code(obj.docstring.value)

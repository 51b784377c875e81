"""Errors that describe a problem with the user's input (data, config, files).

The command line prints an :class:`InputError` as one message (what is wrong, which
file/line/id/column, what to change) and exits with status 2, without a traceback
(set ``MEDLLAMA_FUSION_DEBUG=1`` to see it). Library code raises a subclass of
:class:`InputError` for anything a user can fix by changing their files or settings.

Choice arguments are ``typing.Literal`` types: the command line (jsonargparse) checks them and
lists their values in ``--help``; code that builds a configuration in Python gets the same check
from :func:`check_choice`, which reads the allowed values from the same ``Literal``, so they are
written once.
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

__all__ = ["InputError", "check_choice", "choices"]


class InputError(ValueError):
    """A problem with the user's data, files or settings that the user can fix.

    Subclasses :class:`ValueError`, so existing ``except ValueError`` code keeps working.
    """


def choices(annotation: Any) -> tuple[Any, ...]:
    """The values a ``Literal``, or a union of ``Literal`` types and ``None``, allows.

    Args:
        annotation: E.g. ``Literal["4bit", "8bit"] | None``.

    Returns:
        The values in declaration order (``None`` for a ``None`` member of a union).
    """
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    values: list[Any] = []
    for member in get_args(annotation):
        values.extend((None,) if member is type(None) else choices(member))
    return tuple(values)


def check_choice(value: object, annotation: Any, name: str) -> None:
    """Raise an :class:`InputError` naming the allowed values when ``value`` is not one of them.

    Args:
        value: The given value.
        annotation: The ``Literal`` (or union of ``Literal`` and ``None``) of the argument.
        name: The argument as the user knows it, e.g. ``"BackboneConfig.dtype"``.

    Raises:
        InputError: When ``value`` is not allowed.
    """
    allowed = choices(annotation)
    if value not in allowed:
        raise InputError(
            f"{name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}."
        )

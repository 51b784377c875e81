"""Runtime check of a ``typing.Literal`` choice for Python callers.

The command line (jsonargparse) checks a ``Literal`` argument itself and lists its values in
``--help``. Code that builds a configuration in Python gets the same check from
:func:`check_choice`, which reads the allowed values from the same ``Literal``, so they are
written once.
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

__all__ = ["check_choice", "choices"]


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
    """Raise a ``ValueError`` naming the allowed values when ``value`` is not one of them.

    Args:
        value: The given value.
        annotation: The ``Literal`` (or union of ``Literal`` and ``None``) of the argument.
        name: The argument as the user knows it, e.g. ``"BackboneConfig.dtype"``.

    Raises:
        ValueError: When ``value`` is not allowed.
    """
    allowed = choices(annotation)
    if value not in allowed:
        raise ValueError(
            f"{name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}."
        )

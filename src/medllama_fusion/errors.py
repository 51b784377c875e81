"""Errors that describe a problem with the user's input (data, config, files).

The command line prints an :class:`InputError` as one message (what is wrong, which
file/line/id/column, what to change) and exits with status 2, without a traceback
(set ``MEDLLAMA_FUSION_DEBUG=1`` to see it). Library code raises a subclass of
:class:`InputError` for anything a user can fix by changing their files or settings.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A problem with the user's data, files or settings that the user can fix.

    Subclasses :class:`ValueError`, so existing ``except ValueError`` code keeps working.
    """

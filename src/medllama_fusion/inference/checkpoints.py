"""Open a checkpoint file without running code from it, or say clearly why it cannot be opened.

A ``.ckpt`` is a pickle: opened with full trust it may run any code it carries. Every part of
this library that opens one (the pipeline, ``explain``, ``export``, ``fit``/``validate``/
``test``/``predict --ckpt_path`` and the other subcommands) goes through
:func:`load_checkpoint`, which uses ``torch.load(..., weights_only=True)``: tensors, containers
and plain values only. The library's own checkpoints need nothing else. A file that asks for
anything else (a class, a function) is refused with one message naming the global it asked for;
``weights_only=False`` (``--weights_only false`` on the command line) opens it with full trust,
for your own older files only: it runs code from the file.

A truncated download, a file that is not a checkpoint and a checkpoint without the parts a
library run writes each get their own message naming the file. To share a model with others,
export it (``medllama-fusion export``): a safetensors file and JSON configuration, which never
run code when opened.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from medllama_fusion.errors import InputError

__all__ = ["CheckpointError", "load_checkpoint"]

_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_LEGACY_MAGIC = b"\x80"  # a pickle (torch's pre-1.6 format) starts with the PROTO opcode


class CheckpointError(InputError):
    """A checkpoint file cannot be opened (missing, truncated, not a checkpoint, or unsafe)."""


def _kind_of_file(path: Path) -> str:
    """``"zip"`` (torch's format), ``"pickle"`` (its legacy format) or ``"other"``."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK"):
        return "zip"
    if head.startswith(_LEGACY_MAGIC):
        return "pickle"
    return "other"


def load_checkpoint(
    path: str | Path, weights_only: bool = True, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load a Lightning checkpoint without running code from it (see the module docstring).

    Args:
        path: The ``.ckpt`` file.
        weights_only: Refuse anything but tensors and plain values (default). ``False`` opens
            the file with full trust and runs any code it carries: only for your own files.
        map_location: Where to put the tensors (default: the CPU).

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: When the file is missing, truncated or corrupt, not a checkpoint, asks
            for code (with ``weights_only``), or holds no ``state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the .ckpt file of a run.")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path} is empty, not a readable checkpoint (an interrupted download or copy?); "
            "copy the file again."
        )
    kind = _kind_of_file(path)
    if kind == "other":
        raise CheckpointError(
            f"{path} is not a checkpoint file (it is neither a PyTorch zip archive nor a "
            "pickle); pass the .ckpt file written by `medllama-fusion fit`."
        )
    if kind == "zip" and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is truncated or corrupt (its zip directory is missing: an interrupted "
            "download or copy?); copy the file again."
        )
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as error:
        match = _GLOBAL.search(str(error))
        if weights_only and match is not None:
            raise CheckpointError(
                f"{path} asks to run code while it is opened (it needs the global "
                f"`{match.group(1)}`, which a checkpoint of this library never does), so it was "
                "not opened. Ask its author for an exported model folder (`medllama-fusion "
                "export`), or, only if it is your own older file, open it with "
                "--weights_only false (weights_only=False in Python), which runs code from it."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({_first_line(error)}); pass the .ckpt file "
            "written by `medllama-fusion fit`."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({_first_line(error)}); copy the file again."
        ) from None
    if not isinstance(loaded, dict) or "state_dict" not in loaded:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no state_dict inside); pass the .ckpt file "
            "written by `medllama-fusion fit`."
        )
    return loaded


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")

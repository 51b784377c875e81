"""Compile the transformer blocks of a fusion model with :func:`torch.compile`.

Reports have different lengths. When the data module pads them to a few fixed lengths
(``length_buckets``), every block is compiled with static shapes (``dynamic=False``): one
compilation per padded length (and per batch size and train/eval mode), each with kernels
specialised to its shape, and never a recompilation for a new report length. Without fixed
lengths, ``torch.compile``'s default applies (it recompiles with a dynamic length after the
first change of shape).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch._dynamo  # torch documents its Dynamo settings under torch._dynamo.config
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

__all__ = ["compile_blocks"]

_SHAPES_PER_LENGTH = 8
"""Compilations a block may need per padded length: batch sizes (full, last) x train/eval x
whether its input requires grad; the Dynamo recompile limit is raised to cover them."""


def compile_blocks(
    model: nn.Module,
    class_names: Collection[str],
    backend: str | Callable[..., Any] = "inductor",
    lengths: Sequence[int] | None = None,
) -> int:
    """Compile, in place, every submodule of ``model`` whose class name is in ``class_names``.

    Args:
        model: The model whose blocks are compiled (``nn.Module.compile``).
        class_names: Class names of the blocks (e.g. ``LlamaDecoderLayer``).
        backend: ``torch.compile`` backend.
        lengths: The fixed lengths the batches are padded to, or ``None`` when they vary;
            fixed lengths compile with ``dynamic=False`` and raise Dynamo's recompile limit to
            ``8 * (len(lengths) + 1)`` when it is lower, so that no shape falls back to eager.

    Returns:
        The number of blocks compiled.
    """
    dynamic = False if lengths else None
    if lengths:
        needed = _SHAPES_PER_LENGTH * (len(lengths) + 1)
        if torch._dynamo.config.recompile_limit < needed:
            torch._dynamo.config.recompile_limit = needed
        rank_zero_info(
            f"compiling with static shapes for the padded report lengths {list(lengths)} "
            f"(Dynamo recompile limit {torch._dynamo.config.recompile_limit})."
        )
    count = 0
    for module in model.modules():
        if type(module).__name__ in class_names:
            module.compile(backend=backend, dynamic=dynamic)
            count += 1
    return count

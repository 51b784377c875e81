from __future__ import annotations

from typing import Any

import pytest
import torch

TINY: dict[str, Any] = dict(
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    num_hidden_layers=12,
    vocab_size=512,
)


def make_batch(
    batch: int = 3, length: int = 9, image: int = 32, seed: int = 0, pad_from: int | None = None
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 512, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    if pad_from is not None and batch > 1:
        mask[1, pad_from:] = 0
        ids[1, pad_from:] = 0
    pixels = torch.randn(batch, 1, image, image, generator=gen)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


@pytest.fixture
def tiny_config() -> dict[str, Any]:
    return dict(TINY)

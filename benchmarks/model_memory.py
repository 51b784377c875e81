"""Parameter memory of the fusion models at LLaMA-2-7B dimensions, counted on the meta device.

Nothing is allocated: every variant is built under ``torch.device("meta")`` with a random
(bf16) LLaMA-2-7B-shaped base, and the script counts

* frozen bytes as stored (a tensor shared by several modules counted once) and as they would be
  if every module held its own copy (how cross layers were built when each direction deep-copied
  its source decoder layer);
* trainable parameters, and the extra bytes of keeping them in float32 instead of bf16:
  2 bytes per parameter for the weights, and 2 + 2 + 2 = 6 more for gradients and AdamW's two
  moments, which follow the parameters' dtype.

Example::

    python benchmarks/model_memory.py --json memory.json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from medllama_fusion import (
    BackboneConfig,
    FusionModel,
    LoraSettings,
    MixedFusion,
    ParallelFusion,
    SerialFusion,
    VisionConfig,
)

LLAMA2_7B: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "num_hidden_layers": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
}
VARIANTS: dict[str, type[FusionModel]] = {
    "parallel": ParallelFusion,
    "serial": SerialFusion,
    "mixed": MixedFusion,
}
GB = 1e9


def count(model: torch.nn.Module) -> dict[str, float]:
    """Frozen bytes (stored / one copy per module) and trainable parameters of ``model``."""
    stored = {id(p): p for p in model.parameters()}
    every = [p for _, p in model.named_parameters(remove_duplicate=False)]
    frozen_stored = sum(
        p.numel() * p.element_size() for p in stored.values() if not p.requires_grad
    )
    frozen_copies = sum(p.numel() * p.element_size() for p in every if not p.requires_grad)
    trainable = sum(p.numel() for p in stored.values() if p.requires_grad)
    trainable_dtypes = sorted({str(p.dtype) for p in stored.values() if p.requires_grad})
    return {
        "frozen_gb": frozen_stored / GB,
        "frozen_gb_one_copy_per_direction": frozen_copies / GB,
        "frozen_saved_gb": (frozen_copies - frozen_stored) / GB,
        "trainable_params": trainable,
        "trainable_dtypes": trainable_dtypes,  # type: ignore[dict-item]
        "fp32_extra_weights_gb": 2 * trainable / GB,
        "fp32_extra_weights_grads_adam_gb": 8 * trainable / GB,
    }


def build(variant: str, blocks_init: str, lora_r: int) -> FusionModel:
    """One variant at 7B dimensions on the meta device (bf16 base, paper LoRA budget)."""
    with torch.device("meta"):
        return VARIANTS[variant](
            backbone=BackboneConfig(
                config=dict(LLAMA2_7B), num_text_layers=3, dtype="bfloat16", init_device="meta"
            ),
            vision=VisionConfig(image_size=224, patch_size=16, num_layers=3),
            lora=LoraSettings.paper_budget(lora_r),
            num_labels=14,
            num_cross_layers=3,
            blocks_init=blocks_init,
        )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Count every variant and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lora-r", type=int, default=2, choices=[2, 4, 8])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for blocks_init in ("backbone", "random"):
        for variant in VARIANTS:
            row = {"variant": variant, "blocks_init": blocks_init, "lora_r": args.lora_r}
            row.update(count(build(variant, blocks_init, args.lora_r)))
            rows.append(row)
    print(
        "| variant | blocks_init | frozen GB (stored) | frozen GB (copy per direction) | saved GB"
        " | trainable params | fp32 extra: weights GB | + grads + AdamW GB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['blocks_init']} | {r['frozen_gb']:.2f} |"
            f" {r['frozen_gb_one_copy_per_direction']:.2f} | {r['frozen_saved_gb']:.2f} |"
            f" {r['trainable_params'] / 1e6:.1f} M | {r['fp32_extra_weights_gb']:.3f} |"
            f" {r['fp32_extra_weights_grads_adam_gb']:.3f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()

"""Cost of float32 trainable tensors above a bf16 base: memory and step time, CPU or GPU.

Two copies of the same fusion model (bf16 frozen base, random seeded weights) are trained side by
side in one process:

* **fp32 trainable** — the library's behaviour: LoRA, head, norms, patch embedding and new
  blocks in float32;
* **bf16 trainable** (reference) — the same model with every trainable tensor cast to bf16 (what
  the library did before; in bf16 an update below ~0.4 % of a weight rounds away).

Steps alternate between the two models (forward, backward, AdamW step), so load from other
processes hits both alike; the script reports the median step time of each and their ratio, and
the exact bytes of parameters, gradients and AdamW state. With ``--autocast`` the steps run under
``torch.autocast(bfloat16)`` (Lightning's ``bf16-mixed``); otherwise in plain bf16.

Example (CPU, "small" dimensions, about a minute on one core)::

    python benchmarks/fp32_trainable_cost.py --autocast --json fp32_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch
from torch import nn

from medllama_fusion import (
    BackboneConfig,
    FusionModel,
    LoraSettings,
    MixedFusion,
    ParallelFusion,
    SerialFusion,
    VisionConfig,
)

VARIANTS: dict[str, type[FusionModel]] = {
    "parallel": ParallelFusion,
    "serial": SerialFusion,
    "mixed": MixedFusion,
}
SMALL: dict[str, Any] = {
    "vocab_size": 8000,
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "num_hidden_layers": 12,
    "max_position_embeddings": 512,
}


def build(args: argparse.Namespace) -> FusionModel:
    """The benchmarked model (same seed every time, so both copies start identical)."""
    torch.manual_seed(0)
    return VARIANTS[args.variant](
        backbone=BackboneConfig(config=dict(SMALL), num_text_layers=3, dtype="bfloat16"),
        vision=VisionConfig(image_size=args.image_size, patch_size=8, num_layers=3),
        lora=LoraSettings.paper_budget(2),
        num_labels=14,
        num_cross_layers=3,
        blocks_init=args.blocks_init,
    ).train()


def cast_trainable(model: nn.Module, dtype: torch.dtype) -> None:
    """Replace every trainable parameter by a copy in ``dtype`` (the reference run)."""
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.requires_grad:
                module._parameters[name] = nn.Parameter(param.detach().to(dtype))


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Exact bytes of trainable parameters, their gradients and AdamW's state."""
    params = [p for p in model.parameters() if p.requires_grad]
    adam = sum(
        t.numel() * t.element_size()
        for s in optimizer.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    )
    return {
        "trainable_params": sum(p.numel() for p in params),
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "grad_bytes": sum(
            p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None
        ),
        "adam_bytes": adam,
        "frozen_bytes": sum(
            p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both models and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="parallel")
    parser.add_argument("--blocks-init", choices=["backbone", "random"], default="backbone")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--autocast", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    models = {"fp32 trainable": build(args), "bf16 trainable (reference)": build(args)}
    cast_trainable(models["bf16 trainable (reference)"], torch.bfloat16)
    optimizers = {}
    for name, model in models.items():
        model.to(device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizers[name] = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(
            3, SMALL["vocab_size"], (args.batch_size, args.text_len), generator=gen
        ),
        "pixel_values": torch.randn(
            args.batch_size, 1, args.image_size, args.image_size, generator=gen
        ),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    labels = torch.randint(0, 2, (args.batch_size, 14), generator=gen).float().to(device)

    def step(name: str) -> float:
        model, optimizer = models[name], optimizers[name]
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=args.autocast):
            logits = model(**batch).logits
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep the gradients' memory in the count
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.warmup + args.steps):
        for name in models:
            elapsed = step(name)
            if i >= args.warmup:
                times[name].append(elapsed)
    rows = {}
    for name, model in models.items():
        rows[name] = {
            "step_s_median": statistics.median(times[name]),
            "step_s_all": times[name],
            **state_bytes(model, optimizers[name]),
        }
    new, ref = rows["fp32 trainable"], rows["bf16 trainable (reference)"]

    def state(row: dict[str, Any]) -> int:
        return int(row["param_bytes"] + row["grad_bytes"] + row["adam_bytes"])

    out = {
        "env": {
            "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
            "threads": args.threads,
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },
        "args": vars(args),
        "dims": SMALL,
        "results": rows,
        "step_time_ratio": new["step_s_median"] / ref["step_s_median"],
        "trainable_state_ratio": state(new) / state(ref),
        "total_state_ratio": (state(new) + new["frozen_bytes"])
        / (state(ref) + ref["frozen_bytes"]),
    }
    for name, row in rows.items():
        print(
            f"{name:28s} step {row['step_s_median'] * 1e3:8.1f} ms  trainable "
            f"{row['trainable_params'] / 1e6:.2f} M  params+grads+adam "
            f"{state(row) / 2**20:8.1f} MiB  frozen {row['frozen_bytes'] / 2**20:8.1f} MiB"
        )
    print(
        f"ratios fp32/bf16: step time {out['step_time_ratio']:.3f}, trainable state "
        f"{out['trainable_state_ratio']:.3f}, all parameters+state {out['total_state_ratio']:.3f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()

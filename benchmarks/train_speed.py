"""Training-speed benchmark: each fusion variant vs. a bare LLaMA stack, in one run.

Every variant is measured through the library's own training step (``FusionClassifier`` driven by
a Lightning ``Trainer`` reading a real ``DataLoader`` of synthetic tensors). The reference is a bare
transformers ``LlamaModel`` with the same number of hidden-size decoder blocks, LoRA on q/v and
AdamW, fed the concatenated text + image sequence (the brief's reference measurement), timed in a
plain PyTorch loop in the same process.

Examples:
    CPU smoke run (tiny dimensions, seconds)::

        python benchmarks/train_speed.py --size tiny --steps 3 --warmup 1

    Paper scale on one GPU (LLaMA-2-7B dimensions, random init)::

        python benchmarks/train_speed.py --size 7b --compile --json results.json
        python benchmarks/train_speed.py --size 7b --qlora-only --json qlora.json

The printed table and the JSON hold samples/s, model-FLOP utilisation (FLOPs counted with
``torch.utils.flop_counter`` on one eager step), peak GPU memory and, for the variants, the
estimated wall time of the paper's 15-epoch run (15 x 3,199 training samples).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
import transformers
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from medllama_fusion import (
    BackboneConfig,
    FusionClassifier,
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

#: LLaMA-2-7B dimensions and a tiny stand-in for CPU smoke runs.
SIZES: dict[str, dict[str, Any]] = {
    "7b": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
    },
    "tiny": {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5,
    },
}

PAPER_TRAIN_SAMPLES = 3199 * 15


@dataclass
class Result:
    """One benchmark row."""

    name: str
    blocks: int
    samples_per_s: float
    step_ms_median: float
    tflops_per_step: float
    mfu: float
    peak_mem_gib: float | None
    trainable_params: int
    notes: str = ""
    step_ms_all: list[float] = field(default_factory=list)


class SyntheticBatches(Dataset[dict[str, Any]]):
    """Random report tokens, chest-X-ray-sized images and labels, as the datamodule yields them."""

    def __init__(self, n: int, text_len: int, image_size: int, vocab: int, labels: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.input_ids = torch.randint(3, vocab, (n, text_len), generator=g)
        self.pixel_values = torch.randn(n, 1, image_size, image_size, generator=g)
        self.labels = torch.randint(0, 2, (n, labels), generator=g).float()

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "input_ids": self.input_ids[i],
            "attention_mask": torch.ones_like(self.input_ids[i]),
            "pixel_values": self.pixel_values[i],
            "labels": self.labels[i],
            "ids": str(i),
        }


class StepTimer(pl.Callback):
    """Wall time of every training step, synchronising the device at both ends."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """Start the clock after all queued device work is done."""
        _sync()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Stop the clock once the step's device work is done."""
        _sync()
        self.times.append(time.perf_counter() - self._t0)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_mem_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def _reset_mem() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _count_flops(step: Callable[[], None]) -> float:
    """FLOPs of one forward + backward, counted by PyTorch's dispatcher-level counter."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def _summarise(
    name: str,
    blocks: int,
    times: list[float],
    batch: int,
    flops: float,
    peak_tflops: float,
    trainable: int,
    notes: str = "",
) -> Result:
    med = statistics.median(times)
    return Result(
        name=name,
        blocks=blocks,
        samples_per_s=batch / med,
        step_ms_median=med * 1e3,
        tflops_per_step=flops / 1e12,
        mfu=flops / med / (peak_tflops * 1e12),
        peak_mem_gib=_peak_mem_gib(),
        trainable_params=trainable,
        notes=notes,
        step_ms_all=[t * 1e3 for t in times],
    )


def count_blocks(fusion: FusionModel, hidden: int, intermediate: int) -> int:
    """Number of hidden-size decoder blocks a fusion model holds, by weight volume.

    A bidirectional cross layer holds two attention + feed-forward sub-blocks, so it counts as two.
    """
    per_block = 4 * hidden * hidden + 3 * hidden * intermediate
    weights = 0
    for name, module in fusion.named_modules():
        if name.endswith(
            ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        ) and hasattr(module, "in_features"):
            weights += module.in_features * module.out_features
    return round(weights / per_block)


def build_fusion(
    variant: str,
    dims: dict[str, Any],
    args: argparse.Namespace,
    num_text_layers: int,
    quantization: str | None = None,
    gradient_checkpointing: bool = False,
) -> FusionModel:
    """A fusion model at the requested dimensions, random (seeded) backbone."""
    config = dict(dims, num_hidden_layers=args.backbone_layers)
    return VARIANTS[variant](
        backbone=BackboneConfig(
            config=config,
            num_text_layers=num_text_layers,
            dtype=args.base_dtype,
            quantization=quantization,
            gradient_checkpointing=gradient_checkpointing,
            init_device=args.init_device,
        ),
        vision=VisionConfig(
            image_size=args.image_size, patch_size=args.patch_size, num_layers=args.vision_layers
        ),
        lora=LoraSettings(
            r=args.lora_r,
            alpha=2 * args.lora_r,
            dropout=0.0,
            target_modules=list(args.lora_targets),
        ),
        num_labels=14,
        num_cross_layers=args.cross_layers,
    )


def bench_library(
    name: str,
    fusion: FusionModel,
    args: argparse.Namespace,
    dims: dict[str, Any],
    blocks: int,
) -> Result:
    """Time ``FusionClassifier.training_step`` under a Lightning Trainer."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = SyntheticBatches(
        args.batch_size * (args.warmup + args.steps + 1),
        args.text_len,
        args.image_size,
        dims["vocab_size"],
        14,
    )
    batch = next(iter(DataLoader(data, batch_size=args.batch_size)))
    fusion.to(device)
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "pixel_values")}

    def eager_step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            fusion(**inputs).logits.float().sum().backward()

    flops = _count_flops(eager_step)
    fusion.zero_grad(set_to_none=True)
    trainable = sum(p.numel() for p in fusion.parameters() if p.requires_grad)
    module = FusionClassifier(fusion=fusion, compile=args.compile)
    loader = DataLoader(
        data,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=args.workers > 0,
        drop_last=True,
    )
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    _reset_mem()
    trainer.fit(module, train_dataloaders=loader)
    return _summarise(
        name,
        blocks,
        timer.times[args.warmup :],
        args.batch_size,
        flops,
        args.peak_tflops,
        trainable,
    )


def bench_reference(args: argparse.Namespace, dims: dict[str, Any], blocks: int) -> Result:
    """A bare transformers ``LlamaModel`` with LoRA on q/v, AdamW, bf16 autocast and SDPA."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import LlamaConfig, LlamaModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    seq = args.text_len + (args.image_size // args.patch_size) ** 2
    torch.manual_seed(0)
    config = LlamaConfig(**dims, num_hidden_layers=blocks, attn_implementation="sdpa")
    with torch.device(device):
        model = LlamaModel(config).to(getattr(torch, args.base_dtype))
    model.requires_grad_(False)
    model = inject_adapter_in_model(
        LoraConfig(
            r=args.lora_r,
            lora_alpha=2 * args.lora_r,
            lora_dropout=0.0,
            target_modules=list(args.lora_targets),
        ),
        model,
    )
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data = p.data.float()
    head = nn.Linear(dims["hidden_size"], 14, device=device)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-5, fused=device == "cuda")
    ids = torch.randint(3, dims["vocab_size"], (args.batch_size, seq), device=device)
    labels = torch.randint(0, 2, (args.batch_size, 14), device=device).float()

    def loss_fn() -> torch.Tensor:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            hidden = model(input_ids=ids).last_hidden_state
            logits = head(hidden.mean(1))
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)

    flops = _count_flops(lambda: loss_fn().backward())
    opt.zero_grad(set_to_none=True)
    if args.compile:
        model = torch.compile(model)  # type: ignore[assignment]

    times: list[float] = []
    _reset_mem()
    for _ in range(args.warmup + args.steps):
        _sync()
        t0 = time.perf_counter()
        loss_fn().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync()
        times.append(time.perf_counter() - t0)
    trainable = sum(p.numel() for p in params)
    result = _summarise(
        f"bare LlamaModel x{blocks}" + (" (compiled)" if args.compile else ""),
        blocks,
        times[args.warmup :],
        args.batch_size,
        flops,
        args.peak_tflops,
        trainable,
        notes=f"{seq} tokens",
    )
    return result


def _table(rows: list[Result]) -> Iterator[str]:
    """Markdown table; variants get their speed relative to the bare stack of equal depth."""
    bare = {r.blocks: r.samples_per_s for r in rows if r.name.startswith("bare")}
    yield (
        f"| {'run':<36} | blocks | samples/s | vs bare | step ms | TFLOP/step | MFU |"
        " peak GiB | 15-epoch run |"
    )
    yield "|" + "|".join("-" * w for w in (38, 8, 11, 9, 9, 12, 5, 10, 14)) + "|"
    for r in rows:
        mem = f"{r.peak_mem_gib:.1f}" if r.peak_mem_gib is not None else "-"
        epoch = PAPER_TRAIN_SAMPLES / r.samples_per_s
        ratio = (
            f"{r.samples_per_s / bare[r.blocks]:.2f}x"
            if r.blocks in bare and not r.name.startswith("bare")
            else "-"
        )
        yield (
            f"| {r.name:<36} | {r.blocks:>6} | {r.samples_per_s:>9.1f} | {ratio:>7} |"
            f" {r.step_ms_median:>7.1f} | {r.tflops_per_step:>10.2f} | {r.mfu:>3.0%} |"
            f" {mem:>8} | {epoch / 60:>8.1f} min |"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print/write the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument(
        "--variants", nargs="+", choices=sorted(VARIANTS), default=["parallel", "serial", "mixed"]
    )
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--text-len", type=int, default=196)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--vision-layers", type=int, default=3)
    p.add_argument("--cross-layers", type=int, default=3)
    p.add_argument(
        "--backbone-layers",
        type=int,
        default=32,
        help="decoder layers in the random backbone config (LLaMA-2-7B: 32)",
    )
    p.add_argument("--lora-r", type=int, default=4)
    p.add_argument("--lora-targets", nargs="+", default=["q_proj", "v_proj"])
    p.add_argument(
        "--init-device",
        default="cpu",
        help="device the random backbone is initialised on ('cuda': seconds at 7B)",
    )
    p.add_argument("--base-dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=989.4,
        help="dense bf16 peak for MFU (H100/H200 SXM datasheet: 989.4)",
    )
    p.add_argument("--no-reference", action="store_true")
    p.add_argument(
        "--qlora",
        action="store_true",
        help="also run the 4-bit + gradient-checkpointing memory run",
    )
    p.add_argument("--qlora-only", action="store_true")
    p.add_argument("--qlora-blocks", type=int, default=32)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dims = SIZES[args.size]
    rows: list[Result] = []
    references: dict[int, Result] = {}

    if not args.qlora_only:
        for variant in args.variants:
            torch.manual_seed(0)
            fusion = build_fusion(variant, dims, args, args.text_layers)
            blocks = count_blocks(fusion, dims["hidden_size"], dims["intermediate_size"])
            rows.append(
                bench_library(
                    f"{variant} (library{', compiled' if args.compile else ''})",
                    fusion,
                    args,
                    dims,
                    blocks,
                )
            )
            print(rows[-1].name, f"{rows[-1].samples_per_s:.1f} samples/s", flush=True)
            del fusion
            _reset_mem()
            if not args.no_reference and blocks not in references:
                # One reference per block count: variants with equal counts share it.
                references[blocks] = bench_reference(args, dims, blocks)
                rows.append(references[blocks])
                print(rows[-1].name, f"{rows[-1].samples_per_s:.1f} samples/s", flush=True)
                _reset_mem()
            if args.json:
                _write(args, rows)

    if args.qlora or args.qlora_only:
        # A SerialFusion whose 4096-d blocks add up to --qlora-blocks: text layers fill the rest.
        probe = build_fusion("serial", SIZES["tiny"], args, args.text_layers)
        other = count_blocks(probe, 64, 128) - args.text_layers
        del probe
        text_layers = args.qlora_blocks - other
        fusion = build_fusion(
            "serial", dims, args, text_layers, quantization="4bit", gradient_checkpointing=True
        )
        blocks = count_blocks(fusion, dims["hidden_size"], dims["intermediate_size"])
        rows.append(
            bench_library(
                f"serial QLoRA-4bit+ckpt ({text_layers} text)",
                fusion,
                args,
                dims,
                blocks,
            )
        )
        print(rows[-1].name, f"{rows[-1].peak_mem_gib} GiB", flush=True)

    print()
    for line in _table(rows):
        print(line)
    out = _write(args, rows)
    if any(math.isnan(r.samples_per_s) for r in rows):
        raise SystemExit("a run produced no timing")
    return out


def _write(args: argparse.Namespace, rows: list[Result]) -> dict[str, Any]:
    """Collect the environment and results; write them to ``--json`` when given."""
    env = {
        "date": time.strftime("%Y-%m-%d"),
        "device": (
            torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
        ),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": pl.__version__,
        "python": platform.python_version(),
    }
    out = {"env": env, "args": vars(args), "results": [asdict(r) for r in rows]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return out


if __name__ == "__main__":
    main()

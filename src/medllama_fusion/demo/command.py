"""Command line for the synthetic demo data: ``python -m medllama_fusion.demo --root DIR``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from medllama_fusion.demo.generator import DEMO_REPORTS, make_demo_dataset


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point: ``python -m medllama_fusion.demo --root DIR``.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        description="Write the synthetic, learnable OpenI-like demo dataset."
    )
    parser.add_argument("--root", required=True, help="output folder")
    parser.add_argument("--n-reports", type=int, default=DEMO_REPORTS)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=("raw", "csv", "both"), default="both")
    args = parser.parse_args(argv)
    root = make_demo_dataset(
        args.root,
        n_reports=args.n_reports,
        image_size=args.image_size,
        seed=args.seed,
        layout=args.layout,
    )
    print(f"wrote demo dataset ({args.n_reports} reports) to {root}")


__all__ = ["main"]

"""Command line for the synthetic demo data: ``python -m medllama_fusion.datasets.demo``.

The generator lives in :mod:`medllama_fusion.datasets.synthetic` (this module re-exports its
main functions); keeping the command in its own module lets ``python -m`` run it without the
package having imported it first.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from medllama_fusion.datasets.synthetic import (
    DEMO_REPORTS,
    build_demo_tokenizer,
    make_demo_dataset,
    write_demo_root,
)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point: ``python -m medllama_fusion.datasets.demo --root DIR``.

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


__all__ = ["DEMO_REPORTS", "build_demo_tokenizer", "main", "make_demo_dataset", "write_demo_root"]

if __name__ == "__main__":
    main()

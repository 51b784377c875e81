"""Synthetic, learnable OpenI-format demo data for the quickstart, the docs and the tests.

Kept apart from the real sources (:mod:`medllama_fusion.datasets`): the generator
(:mod:`~medllama_fusion.demo.generator`) writes reports, images and a tokenizer in both OpenI
layouts; :class:`DemoDataset` is the source that writes it on first use (the quickstart's), and
``python -m medllama_fusion.demo --root DIR`` runs the generator from the command line.
"""

from medllama_fusion.demo.command import main
from medllama_fusion.demo.dataset import DemoDataset
from medllama_fusion.demo.generator import (
    DEMO_REPORTS,
    DEMO_SEED,
    build_demo_tokenizer,
    make_demo_dataset,
    write_demo_root,
)

__all__ = [
    "DEMO_REPORTS",
    "DEMO_SEED",
    "DemoDataset",
    "build_demo_tokenizer",
    "main",
    "make_demo_dataset",
    "write_demo_root",
]

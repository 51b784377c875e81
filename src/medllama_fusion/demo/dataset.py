"""``DemoDataset``: the synthetic demo data as a source, written into its folder on first use.

The quickstart preset reads it (``data.init_args.source: {class_path: DemoDataset, init_args:
{root: demo_data}}``), so ``medllama-fusion fit --config quickstart`` runs from an empty folder.
It reads like :class:`~medllama_fusion.datasets.OpenIDataset` (both layouts are written, with a
tokenizer in ``<root>/tokenizer``); a folder that already holds data is never written to.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medllama_fusion.datasets.openi import Layout, OpenIDataset
from medllama_fusion.demo.generator import DEMO_REPORTS, DEMO_TOKENIZER_DIR, write_demo_root
from medllama_fusion.errors import InputError

__all__ = ["DemoDataset"]


class DemoDataset(OpenIDataset):
    """Synthetic OpenI-format demo data (reports, images, labels and a tokenizer).

    :meth:`prepare` writes the demo data (seed
    :data:`~medllama_fusion.demo.generator.DEMO_SEED`) into ``root`` when it is missing or empty;
    then it is read like OpenI data in ``layout``.

    Args:
        root: Folder of the demo data (written when missing or empty).
        layout: ``"auto"``, ``"raw"`` or ``"csv"`` (the demo writes both).
        label_names: Subset/order of the 14 labels; ``None`` = all 14.
        num_reports: Number of demo reports (at least 3, one per split; default 600: a
            468/60/72 split).
        pixels: Side of the written images in pixels (at least 16; the data module resizes
            them to ``preprocessing.image_size``).

    Raises:
        InputError: For ``num_reports < 3`` or ``pixels < 16``.
    """

    def __init__(
        self,
        root: str | Path = "demo_data",
        layout: Layout = "auto",
        label_names: Sequence[str] | None = None,
        num_reports: int = DEMO_REPORTS,
        pixels: int = 64,
    ) -> None:
        if num_reports < 3:
            raise InputError(f"num_reports must be >= 3 (one per split); got {num_reports}.")
        if pixels < 16:
            raise InputError(f"pixels of the demo images must be >= 16; got {pixels}.")
        super().__init__(root, layout=layout, label_names=label_names)
        self.num_reports = num_reports
        self.pixels = pixels

    def describe(self) -> str:
        """Name the demo root and layout for messages."""
        return f"demo data at {self.root} (layout {self.resolved_layout!r})"

    def prepare(self) -> None:
        """Write the demo data into ``root`` when it is missing or empty."""
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            return
        write_demo_root(self.root, n_reports=self.num_reports, image_size=self.pixels)

    def default_tokenizer(self) -> str | None:
        """The demo's tokenizer, ``<root>/tokenizer`` (written by :meth:`prepare`)."""
        return str(self.root / DEMO_TOKENIZER_DIR)

    def missing_data_message(self) -> str:
        """Say what ``root`` holds instead, and how to read it as real data."""
        message = super().missing_data_message()
        if self.root.is_dir() and any(self.root.iterdir()):
            message += (
                " The demo writes only into a missing or empty folder; to train on real OpenI "
                "data, use the OpenI source (--data.init_args.source OpenIDataset) and set "
                "--data.init_args.preprocessing.tokenizer."
            )
        return message

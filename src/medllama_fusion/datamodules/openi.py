"""``OpenIDataModule``: OpenI as users have it on disk (raw NLM release or MONAI CSVs) → batches.

The data module chooses the source, :class:`~medllama_fusion.datasets.openi.OpenIDataset` (which
finds and parses the files of the ``"raw"``, ``"csv"`` or ``"auto"`` layout, see
:mod:`medllama_fusion.datasets.openi`), and splits and batches it with
:class:`~medllama_fusion.datamodules.base.FusionDataModule`. The MONAI CSV layout keeps its fixed
split (the same id or report (``CXR<n>_`` prefix) in two files is an error naming both); the raw
release is split seeded and multi-label stratified by report id (``split_sizes``,
``split_seed``), so all images of a report stay in one split and rare classes reach validation
and test. A report without a frontal image is a text-only sample and a report with empty
FINDINGS and IMPRESSION an image-only sample (``missing_modality: keep``, the default; both are
listed in the setup summary).

``download=True`` fetches the release with
:func:`~medllama_fusion.datasets.download.download_openi` in :meth:`prepare_data`.
``demo=True`` makes :meth:`prepare_data` write the synthetic demo dataset
(:func:`~medllama_fusion.demo.generator.write_demo_root`, seed
:data:`~medllama_fusion.demo.generator.DEMO_SEED`) into a missing or empty ``root``, so
``medllama-fusion fit --config <quickstart>`` needs no other command. The 14 OpenI label names
are known at construction, before any data exists. ``tokenizer=None`` uses ``<root>/tokenizer``
(written by the demo generator) when present.
"""

from __future__ import annotations

from typing import Any

from medllama_fusion.datamodules.base import FusionDataModule
from medllama_fusion.datasets.base import MODALITIES
from medllama_fusion.datasets.download import download_openi
from medllama_fusion.datasets.openi import (
    LAYOUTS,
    METADATA_FILE_NAMES,
    OpenIDataset,
    detect_layout,
    find_view_metadata,
)
from medllama_fusion.demo.generator import DEMO_REPORTS, DEMO_SEED, write_demo_root
from medllama_fusion.errors import InputError


class OpenIDataModule(FusionDataModule):
    """OpenI (Indiana University chest X-ray) data module; see the module docstring.

    Args:
        root: Data folder (raw release, MONAI CSVs, or the demo root holding both).
        layout: ``"auto"``, ``"raw"`` or ``"csv"``.
        tokenizer: Tokenizer folder, ``.gguf`` file or hub id; ``None`` = ``<root>/tokenizer``.
        label_names: Subset/order of the 14 labels (any spelling); default all 14.
        views: Raw layout: accepted view positions; ``None`` = PA/AP; ``[]`` = no view
            selection (first image(s), no table needed).
        one_image_per_report: Raw layout: use one image per report (else all accepted views).
        metadata_csv: Raw layout: DICOM metadata table (``imageid``, ``View Position``).
        image_dir: Raw layout: PNG folder (default ``<root>/NLMCXR_png``).
        strip_anonymization: Raw layout: remove the ``XXXX`` anonymisation tokens.
        encoding: CSV layout: text encoding of the CSV files (e.g. ``cp1252`` for Excel exports).
        download: Download the NLM release into ``root`` in :meth:`prepare_data`.
        demo: When ``root`` holds no data, :meth:`prepare_data` writes the synthetic demo
            dataset there (both layouts + ``<root>/tokenizer``, images of ``image_size``
            pixels), so a config runs from an empty folder.
        demo_reports: Number of demo reports (the generator's default, 600: 468/60/72 split).
        **kwargs: The shared data arguments of
            :class:`~medllama_fusion.datamodules.base.FusionDataModule` (``batch_size``,
            ``image_size``, ``max_length``, ``split_sizes``, ``modalities``, ``bad_input``, ...).

    Raises:
        InputError: For an unknown ``layout`` or label name, or ``demo_reports < 3``.
    """

    def __init__(
        self,
        root: str,
        layout: str = "auto",
        tokenizer: str | None = None,
        label_names: list[str] | None = None,
        views: list[str] | None = None,
        one_image_per_report: bool = True,
        metadata_csv: str | None = None,
        image_dir: str | None = None,
        strip_anonymization: bool = False,
        encoding: str = "utf-8",
        download: bool = False,
        demo: bool = False,
        demo_reports: int = DEMO_REPORTS,
        **kwargs: Any,
    ) -> None:
        source = OpenIDataset(
            root,
            layout=layout,
            label_names=label_names,
            views=views,
            one_image_per_report=one_image_per_report,
            metadata_csv=metadata_csv,
            image_dir=image_dir,
            strip_anonymization=strip_anonymization,
            encoding=encoding,
            modalities=kwargs.get("modalities") or MODALITIES,
        )
        if tokenizer is None:
            tokenizer = str(source.root / "tokenizer")
        super().__init__(
            tokenizer=tokenizer, label_names=source.label_names, source=source, **kwargs
        )
        if demo and demo_reports < 3:
            raise InputError(f"demo_reports must be >= 3 (one per split); got {demo_reports}.")
        self.openi_dataset = source
        self.root = source.root
        self.download = download
        self.demo = demo
        self.demo_reports = demo_reports

    @property
    def resolved_layout(self) -> str:
        """The layout actually used (``"auto"`` resolved against ``root``)."""
        return self.openi_dataset.resolved_layout

    def has_data(self) -> bool:
        """Whether ``root`` holds data for ``layout`` (the CSV files and/or the reports)."""
        return self.openi_dataset.has_data()

    def prepare_data(self) -> None:
        """Get the data once, on rank zero (Lightning calls this before :meth:`setup`).

        ``download=True`` downloads the NLM release into ``root``; ``demo=True`` writes the demo
        dataset into ``root`` when it holds no data (see :func:`write_demo_root`).
        """
        if self.download:
            download_openi(self.root)
        if self.demo and not self.has_data():
            write_demo_root(self.root, n_reports=self.demo_reports, image_size=self.image_size)


__all__ = [
    "DEMO_SEED",
    "LAYOUTS",
    "METADATA_FILE_NAMES",
    "OpenIDataModule",
    "detect_layout",
    "find_view_metadata",
    "write_demo_root",
]

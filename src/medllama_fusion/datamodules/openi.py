"""``OpenIDataModule``: OpenI as users have it on disk (raw NLM release or MONAI CSVs) → batches.

Layouts (``layout``):

- ``"csv"`` — the MONAI TransCheX layout used by the paper, as the tutorial's
  ``preprocess_openi.py`` writes it: ``train.csv``, ``validation.csv``, ``test.csv`` (``id,
  report, <14 labels>``, one row per frontal image, ``id`` = image file name such as
  ``CXR1_1_IM-0001-3001.png``) and the images at ``images/<id>`` (an id without extension means
  ``images/<id>.png``). The files' fixed split (3199/101/377 reports for the real data) is used
  as is; the same id or report (``CXR<n>_`` prefix) in two files is an error naming both.
- ``"raw"`` — the NLM release: ``NLMCXR_reports.tgz`` (read in place) or extracted
  ``ecgen-radiology/*.xml``, and ``NLMCXR_png/*.png``. Labels come from the MeSH terms
  (:func:`~medllama_fusion.datasets.labels.labels_from_mesh`), text is
  ``FINDINGS : ... IMPRESSION : ...``. Images are chosen per report by view position
  (``views``, default PA/AP frontal; ``one_image_per_report``) from a DICOM metadata table,
  looked up in this order: ``metadata_csv`` → ``<root>/nlmcxr_dicom_metadata.csv[.gz]`` (the demo
  writes one) → the table shipped in the ``torchxrayvision`` wheel, if installed (found with
  ``importlib.util.find_spec``, never imported); blank view positions are filled from
  ``nlmcxr_tsne_pa.csv.gz`` when it sits next to the table (as in the wheel; 3664 of the 3927
  non-empty reports then have a frontal image). **Fallback:** with no table at all (a warning
  says so), or with ``views=[]``, every report uses its first listed image(s); on the real data
  the first image is frontal for most but not all reports. A report without an image of the
  wanted views (kind ``no_frontal_image``), or whose image file is absent, is a text-only sample
  (id = report id, e.g. ``CXR5``); a report with empty FINDINGS and IMPRESSION is an image-only
  sample (``missing_modality: keep``, the default; both are listed in the setup summary).
  Split: seeded multi-label stratified by report id (``split_sizes``, ``split_seed``), so all
  images of a report stay in one split and rare classes reach validation and test.
- ``"auto"`` (default) — ``"csv"`` when the three CSV files exist in ``root``, else ``"raw"``.

``download=True`` fetches the release with
:func:`~medllama_fusion.datasets.download.download_openi` in :meth:`prepare_data`.
``demo=True`` makes :meth:`prepare_data` write the synthetic demo dataset
(:func:`~medllama_fusion.datasets.demo.make_demo_dataset`, seed :data:`DEMO_SEED`) into a missing
or empty ``root``, so ``medllama-fusion fit --config <quickstart>`` needs no other command. The
14 OpenI label names are known at construction, before any data exists.
``tokenizer=None`` uses ``<root>/tokenizer`` (written by the demo generator) when present.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from medllama_fusion.datamodules.base import FusionDataModule, LoadedSamples
from medllama_fusion.datamodules.splits import PAPER_SPLIT_FRACTIONS
from medllama_fusion.datasets.csv import (
    IMAGE_SUFFIXES,
    MONAI_ID_COLUMN,
    MONAI_IMAGE_TEMPLATE,
    MONAI_SPLIT_FILES,
    MONAI_TEXT_COLUMN,
    read_samples_csv,
)
from medllama_fusion.datasets.demo import DEMO_REPORTS, make_demo_dataset
from medllama_fusion.datasets.download import download_openi
from medllama_fusion.datasets.fusion_dataset import MODALITIES, FusionSample
from medllama_fusion.datasets.labels import OPENI_LABELS, normalize_label_names
from medllama_fusion.datasets.openi import (
    FRONTAL_VIEWS,
    IMAGES_FOLDER,
    load_openi_reports,
    load_view_positions,
    resolve_reports_source,
    select_images,
)
from medllama_fusion.datasets.text import format_report
from medllama_fusion.datasets.validation import (
    MALFORMED_XML,
    NO_FRONTAL_IMAGE,
    DataFileNotFoundError,
    DataProblem,
)
from medllama_fusion.errors import InputError

LAYOUTS: tuple[str, ...] = ("auto", "raw", "csv")
TSNE_FILE_NAME = "nlmcxr_tsne_pa.csv.gz"
"""torchxrayvision's frontal/lateral table, used to fill blank view positions when it sits next to
the metadata table."""
METADATA_FILE_NAMES: tuple[str, ...] = ("nlmcxr_dicom_metadata.csv", "nlmcxr_dicom_metadata.csv.gz")


def find_view_metadata(root: str | Path, metadata_csv: str | Path | None = None) -> Path | None:
    """Locate the OpenI view-position table (see the module docstring for the order).

    Args:
        root: Data root.
        metadata_csv: Explicit table; must exist when given.

    Returns:
        The table path, or ``None`` when none is available.

    Raises:
        DataFileNotFoundError: If ``metadata_csv`` is given but does not exist.
    """
    if metadata_csv is not None:
        path = Path(metadata_csv).expanduser()
        if not path.is_file():
            raise DataFileNotFoundError(
                f"metadata_csv {path} does not exist; pass the DICOM metadata table "
                "(columns imageid, View Position) or leave metadata_csv unset."
            )
        return path
    for name in METADATA_FILE_NAMES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "data" / "nlmcxr_dicom_metadata.csv.gz"
            if candidate.is_file():
                return candidate
    return None


DEMO_SEED = 0
"""Seed of the demo data written by ``OpenIDataModule(demo=True)``."""


def write_demo_root(root: str | Path, n_reports: int = DEMO_REPORTS, image_size: int = 64) -> Path:
    """Write the demo dataset (both layouts + tokenizer, seed :data:`DEMO_SEED`) into ``root``.

    The data is generated in a hidden sibling folder and renamed to ``root`` in one step, so an
    interrupted run never leaves a half-written ``root``.

    Args:
        root: Missing or empty folder.
        n_reports: Number of reports.
        image_size: Image side length in pixels (>= 16).

    Returns:
        ``root`` as a ``Path``.

    Raises:
        FileExistsError: If ``root`` exists and is not an empty folder.
    """
    root = Path(root).expanduser()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"root {root} is not empty but holds no OpenI data; demo=True writes the demo data "
            "only into a missing or empty folder: choose another root or empty it."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.demo-", dir=root.parent))
    try:
        make_demo_dataset(
            staging, n_reports=n_reports, image_size=image_size, seed=DEMO_SEED, layout="both"
        )
        if root.is_dir():
            root.rmdir()
        os.replace(staging, root)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def detect_layout(root: str | Path) -> str:
    """Return ``"csv"`` if ``root`` holds the three MONAI CSV files, else ``"raw"``.

    Args:
        root: Data root.

    Returns:
        The layout name.
    """
    root = Path(root)
    return "csv" if all((root / f).is_file() for f in MONAI_SPLIT_FILES.values()) else "raw"


class OpenIDataModule(FusionDataModule):
    """OpenI (Indiana University chest X-ray) data module; see the module docstring.

    Args:
        root: Data folder (raw release, MONAI CSVs, or the demo root holding both).
        layout: ``"auto"``, ``"raw"`` or ``"csv"``.
        tokenizer: Tokenizer folder, ``.gguf`` file or hub id; ``None`` = ``<root>/tokenizer``.
        max_length: Maximum report length in tokens.
        image_size: Image side length (paper: 224/256).
        batch_size: Batch size.
        num_workers: DataLoader workers.
        pin_memory: ``None`` = pin when CUDA is available.
        persistent_workers: ``None`` = keep workers when ``num_workers > 0``.
        prefetch_factor: Batches prefetched per worker.
        label_names: Subset/order of the 14 labels (any spelling); default all 14.
        split_sizes: Raw layout: train/val/test fractions or report counts.
        split_seed: Raw layout: split seed.
        views: Raw layout: accepted view positions; ``None`` = PA/AP; ``[]`` = no view
            selection (first image(s), no table needed).
        one_image_per_report: Raw layout: use one image per report (else all accepted views).
        metadata_csv: Raw layout: DICOM metadata table (``imageid``, ``View Position``).
        image_dir: Raw layout: PNG folder (default ``<root>/NLMCXR_png``).
        strip_anonymization: Raw layout: remove the ``XXXX`` anonymisation tokens.
        mask_label_words: Remove label words from reports.
        pad_to_max_length: Pad batches to ``max_length``.
        bad_input: ``"error"`` or ``"skip"``.
        download: Download the NLM release into ``root`` in :meth:`prepare_data`.
        verify_images: Check every image header at setup.
        augment: Training augmentation.
        horizontal_flip: Random horizontal flips (off by default).
        cache_dir: Tokenization cache folder (``None``: in memory).
        drop_last: Drop the last incomplete training batch.
        shuffle_seed: Training order/augmentation seed; ``None`` = the ``seed_everything`` seed.
        demo: When ``root`` holds no data, :meth:`prepare_data` writes the synthetic demo
            dataset there (both layouts + ``<root>/tokenizer``, seed :data:`DEMO_SEED`, images
            of ``image_size`` pixels), so a config runs from an empty folder.
        demo_reports: Number of demo reports (the generator's default, 600: 468/60/72 split).
        modalities: ``["text", "image"]`` (default), ``["text"]`` (no image files needed) or
            ``["image"]`` (no report text needed).
        missing_modality: ``"keep"`` (default) uses a sample lacking one modality with a
            per-sample mask; ``"drop"`` leaves it out.
        stratify: Raw layout: multi-label stratified split by report (default).
        min_split_positives: Warn about classes with fewer positives in validation or test.
        encoding: CSV layout: text encoding of the CSV files (e.g. ``cp1252`` for Excel exports).

    Raises:
        InputError: For an unknown ``layout`` or label name.
    """

    def __init__(
        self,
        root: str,
        layout: str = "auto",
        tokenizer: str | None = None,
        max_length: int = 256,
        image_size: int = 224,
        batch_size: int = 20,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = 2,
        label_names: list[str] | None = None,
        split_sizes: Sequence[float] | Sequence[int] = PAPER_SPLIT_FRACTIONS,
        split_seed: int = 0,
        views: list[str] | None = None,
        one_image_per_report: bool = True,
        metadata_csv: str | None = None,
        image_dir: str | None = None,
        strip_anonymization: bool = False,
        mask_label_words: bool = False,
        pad_to_max_length: bool = False,
        bad_input: str = "error",
        download: bool = False,
        verify_images: bool = True,
        augment: bool = True,
        horizontal_flip: bool = False,
        cache_dir: str | None = None,
        drop_last: bool = False,
        shuffle_seed: int | None = None,
        demo: bool = False,
        demo_reports: int = DEMO_REPORTS,
        modalities: list[str] | None = None,
        missing_modality: str = "keep",
        stratify: bool = True,
        min_split_positives: int = 5,
        encoding: str = "utf-8",
    ) -> None:
        if layout not in LAYOUTS:
            raise InputError(f"layout must be one of {LAYOUTS}; got {layout!r}.")
        self.root = Path(root).expanduser()
        if tokenizer is None:
            tokenizer = str(self.root / "tokenizer")
        super().__init__(
            tokenizer=tokenizer,
            label_names=normalize_label_names(label_names or OPENI_LABELS),
            max_length=max_length,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
            pad_to_max_length=pad_to_max_length,
            mask_label_words=mask_label_words,
            bad_input=bad_input,
            split_sizes=split_sizes,
            split_seed=split_seed,
            verify_images=verify_images,
            augment=augment,
            horizontal_flip=horizontal_flip,
            cache_dir=cache_dir,
            drop_last=drop_last,
            shuffle_seed=shuffle_seed,
            modalities=list(MODALITIES) if modalities is None else modalities,
            missing_modality=missing_modality,
            stratify=stratify,
            min_split_positives=min_split_positives,
        )
        self.encoding = encoding
        self.layout = layout
        self.views: list[str] | None = list(FRONTAL_VIEWS) if views is None else views
        self.view_filter_disabled = views is not None and len(views) == 0
        self.one_image_per_report = one_image_per_report
        self.metadata_csv = metadata_csv
        self.image_dir = Path(image_dir) if image_dir is not None else self.root / IMAGES_FOLDER
        self.strip_anonymization = strip_anonymization
        self.download = download
        if demo and demo_reports < 3:
            raise InputError(f"demo_reports must be >= 3 (one per split); got {demo_reports}.")
        self.demo = demo
        self.demo_reports = demo_reports

    @property
    def resolved_layout(self) -> str:
        """The layout actually used (``"auto"`` resolved against ``root``)."""
        return detect_layout(self.root) if self.layout == "auto" else self.layout

    def source_description(self) -> str:
        """Name the root and layout for messages."""
        return f"OpenI data at {self.root} (layout {self.resolved_layout!r})"

    def has_data(self) -> bool:
        """Whether ``root`` holds data for ``layout`` (the CSV files and/or the reports)."""
        csv_found = all((self.root / name).is_file() for name in MONAI_SPLIT_FILES.values())
        if self.layout == "csv":
            return csv_found
        try:
            resolve_reports_source(self.root)
        except FileNotFoundError:
            return csv_found and self.layout == "auto"
        return True

    def prepare_data(self) -> None:
        """Get the data once, on rank zero (Lightning calls this before :meth:`setup`).

        ``download=True`` downloads the NLM release into ``root``; ``demo=True`` writes the demo
        dataset into ``root`` when it holds no data (see :func:`write_demo_root`).
        """
        if self.download:
            download_openi(self.root)
        if self.demo and not self.has_data():
            write_demo_root(self.root, n_reports=self.demo_reports, image_size=self.image_size)

    def load_samples(self) -> LoadedSamples:
        """Read the samples of the resolved layout.

        Returns:
            Samples, problems and (CSV layout) the fixed split.
        """
        if self.resolved_layout == "csv":
            return self._load_csv()
        return self._load_raw()

    def _load_csv(self) -> LoadedSamples:
        """Read the MONAI CSV layout with its fixed split."""
        loaded = LoadedSamples(samples=[], splits={})
        for split, file_name in MONAI_SPLIT_FILES.items():
            result = read_samples_csv(
                self.root / file_name,
                label_names=self.label_names,
                text_column=MONAI_TEXT_COLUMN,
                image_template=MONAI_IMAGE_TEMPLATE,
                id_column=MONAI_ID_COLUMN,
                image_root=self.root,
                strict_columns=True,
                encoding=self.encoding,
                group_by_report=True,
            )
            loaded.samples.extend(result.samples)
            loaded.problems.extend(result.problems)
            loaded.notes.extend(result.notes)
            assert loaded.splits is not None
            loaded.splits[split] = [sample.id for sample in result.samples]
            loaded.split_sources[split] = str(self.root / file_name)
        return loaded

    def _view_metadata(self) -> dict[str, str] | None:
        """Load the view table, or ``None`` (first-image fallback) with a warning."""
        if self.view_filter_disabled:
            return None
        path = find_view_metadata(self.root, self.metadata_csv)
        if path is None:
            if "image" not in self.modalities:
                return None
            rank_zero_warn(
                f"no view-position table for {self.root}: using the first image of each report. "
                "Pass metadata_csv (columns imageid, View Position) or install torchxrayvision "
                "to select frontal views."
            )
            return None
        tsne = path.parent / TSNE_FILE_NAME
        return load_view_positions(path, tsne if tsne.is_file() else None)

    def _image_path(self, image_id: str) -> Path:
        """Return the PNG path of an XML image id (``<image_dir>/<id>.png``)."""
        suffix = "" if Path(image_id).suffix.lower() in IMAGE_SUFFIXES else ".png"
        return self.image_dir / f"{image_id}{suffix}"

    def _load_raw(self) -> LoadedSamples:
        """Parse the raw NLM release and select images per report (see the module docstring)."""
        try:
            source = resolve_reports_source(self.root)
        except FileNotFoundError as error:
            raise DataFileNotFoundError(
                f"{error}. Or pass download=True to fetch the release into {self.root}."
            ) from error
        reports, parse_problems = load_openi_reports(source, keep_empty=True)
        loaded = LoadedSamples(samples=[])
        for problem in parse_problems:
            if not problem.message.startswith("empty report"):
                loaded.problems.append(DataProblem(MALFORMED_XML, problem.path, problem.message))
        metadata = self._view_metadata()
        views = self.views if metadata is not None else None
        for report in reports:
            image_ids = select_images(report, views, metadata, self.one_image_per_report)
            text = format_report(
                report.findings, report.impression, strip_xxxx=self.strip_anonymization
            )
            labels = tuple(float(v) for v in report.labels_for(self.label_names))
            if not image_ids:
                wanted = "/".join(self.views or []) if views is not None else "any"
                loaded.image_absent[report.report_id] = NO_FRONTAL_IMAGE
                loaded.samples.append(
                    FusionSample(
                        id=report.report_id,
                        image_path=None,
                        text="" if report.is_empty else text,
                        labels=labels,
                        group=report.report_id,
                    )
                )
                if wanted == "any":  # the report lists no image at all
                    loaded.image_absent[report.report_id] = "no_image_listed"
                continue
            for image_id in image_ids:
                loaded.samples.append(
                    FusionSample(
                        id=image_id,
                        image_path=self._image_path(image_id),
                        text="" if report.is_empty else text,
                        labels=labels,
                        group=report.report_id,
                    )
                )
        return loaded


__all__ = [
    "DEMO_SEED",
    "LAYOUTS",
    "METADATA_FILE_NAMES",
    "OpenIDataModule",
    "detect_layout",
    "find_view_metadata",
    "write_demo_root",
]

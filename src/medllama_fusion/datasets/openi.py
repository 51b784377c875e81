"""``OpenIDataset``: OpenI (Indiana University chest X-rays) as users have it on disk.

Layouts (``layout``):

- ``"csv"`` — the MONAI TransCheX layout used by the paper, as the tutorial's
  ``preprocess_openi.py`` writes it: ``train.csv``, ``validation.csv``, ``test.csv`` (``id,
  report, <14 labels>``, one row per frontal image, ``id`` = image file name such as
  ``CXR1_1_IM-0001-3001.png``) and the images at ``images/<id>`` (an id without extension means
  ``images/<id>.png``). The files' fixed split (3199/101/377 reports for the real data) is
  returned as is.
- ``"raw"`` — the NLM release: ``NLMCXR_reports.tgz`` (read in place) or extracted
  ``ecgen-radiology/*.xml``, and ``NLMCXR_png/*.png``, parsed with
  :mod:`medllama_fusion.datasets.nlm_reports`. Labels come from the MeSH terms
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
  wanted views (kind ``no_frontal_image``) is a sample without image (id = report id, e.g.
  ``CXR5``); a report with empty FINDINGS and IMPRESSION is a sample without text. There is no
  fixed split: the data module splits by report.
- ``"auto"`` (default) — ``"csv"`` when the three CSV files exist in ``root``, else ``"raw"``.

Examples:
    >>> from medllama_fusion.datasets import OpenIDataset
    >>> dataset = OpenIDataset("data/openi", layout="raw")  # doctest: +SKIP
    >>> dataset[0].id, dataset[0].labels  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from lightning.pytorch.utilities import rank_zero_warn

from medllama_fusion.datasets.base import (
    MODALITIES,
    FusionSample,
    LoadedSamples,
    SampleDataset,
    check_modalities,
)
from medllama_fusion.datasets.csv_reader import (
    IMAGE_SUFFIXES,
    MONAI_ID_COLUMN,
    MONAI_IMAGE_TEMPLATE,
    MONAI_SPLIT_FILES,
    MONAI_TEXT_COLUMN,
    read_samples_csv,
)
from medllama_fusion.datasets.download import download_openi
from medllama_fusion.datasets.labels import OPENI_LABELS, normalize_label_names
from medllama_fusion.datasets.nlm_reports import (
    FRONTAL_VIEWS,
    IMAGES_FOLDER,
    load_openi_reports,
    load_view_positions,
    resolve_reports_source,
    select_images,
)
from medllama_fusion.datasets.problems import (
    MALFORMED_XML,
    NO_FRONTAL_IMAGE,
    DataFileNotFoundError,
    DataProblem,
)
from medllama_fusion.datasets.reports import format_report
from medllama_fusion.errors import check_choice

Layout = Literal["auto", "raw", "csv"]
"""How the files of an OpenI root are laid out (see the module docstring)."""
LAYOUTS: tuple[str, ...] = get_args(Layout)
"""The values of :data:`Layout`."""

TSNE_FILE_NAME = "nlmcxr_tsne_pa.csv.gz"
"""torchxrayvision's frontal/lateral table, used to fill blank view positions when it sits next to
the metadata table."""

METADATA_FILE_NAMES: tuple[str, ...] = ("nlmcxr_dicom_metadata.csv", "nlmcxr_dicom_metadata.csv.gz")
"""File names of the view-position table looked for in the data root."""


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


def detect_layout(root: str | Path) -> str:
    """Return ``"csv"`` if ``root`` holds the three MONAI CSV files, else ``"raw"``.

    Args:
        root: Data root.

    Returns:
        The layout name.
    """
    root = Path(root)
    return "csv" if _has_csv_files(root) else "raw"


def _has_csv_files(root: Path) -> bool:
    return all((root / name).is_file() for name in MONAI_SPLIT_FILES.values())


def _has_reports(root: Path) -> bool:
    try:
        resolve_reports_source(root)
    except FileNotFoundError:
        return False
    return True


def found_layouts(root: str | Path) -> list[str]:
    """The layouts whose files ``root`` holds (``"csv"``, ``"raw"``, both or none).

    Args:
        root: Data root.

    Returns:
        The layout names found.
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        return []
    return [
        name
        for name, found in (("csv", _has_csv_files(path)), ("raw", _has_reports(path)))
        if found
    ]


class OpenIDataset(SampleDataset):
    """The OpenI chest X-ray collection in the raw NLM or the MONAI CSV layout.

    See the module docstring for the layouts. Constructing it reads no file.

    Args:
        root: Data folder (raw release, MONAI CSVs, or the demo root holding both).
        layout: ``"auto"``, ``"raw"`` or ``"csv"`` (see the module docstring).
        label_names: Subset/order of the 14 labels (any spelling); ``None`` = all 14.
        views: Raw layout: accepted view positions; ``None`` = PA/AP; ``[]`` = no view
            selection (first image(s), no table needed).
        one_image_per_report: Raw layout: use one image per report (else all accepted views).
        metadata_csv: Raw layout: DICOM metadata table (``imageid``, ``View Position``).
        image_dir: Raw layout: PNG folder (default ``<root>/NLMCXR_png``).
        strip_anonymization: Raw layout: remove the ``XXXX`` anonymisation tokens.
        encoding: CSV layout: text encoding of the CSV files (e.g. ``cp1252`` for Excel exports).
        download: Download the NLM release into ``root`` when the data module prepares the
            data (:func:`~medllama_fusion.datasets.download.download_openi`; nothing happens
            when it is there already).

    Raises:
        InputError: For an unknown ``layout`` or label name.
    """

    def __init__(
        self,
        root: str | Path,
        layout: Layout = "auto",
        label_names: Sequence[str] | None = None,
        views: Sequence[str] | None = None,
        one_image_per_report: bool = True,
        metadata_csv: str | Path | None = None,
        image_dir: str | Path | None = None,
        strip_anonymization: bool = False,
        encoding: str = "utf-8",
        download: bool = False,
    ) -> None:
        check_choice(layout, Layout, "layout")
        super().__init__(normalize_label_names(label_names or OPENI_LABELS))
        self.root = Path(root).expanduser()
        self.layout = layout
        self.views: list[str] | None = list(FRONTAL_VIEWS) if views is None else list(views)
        self.view_filter_disabled = views is not None and len(views) == 0
        self.one_image_per_report = one_image_per_report
        self.metadata_csv = metadata_csv
        self.image_dir = Path(image_dir) if image_dir is not None else self.root / IMAGES_FOLDER
        self.strip_anonymization = strip_anonymization
        self.encoding = encoding
        self.download = download

    def prepare(self) -> None:
        """Download the NLM release into ``root`` when ``download`` is set (once)."""
        if self.download:
            download_openi(self.root)

    def default_tokenizer(self) -> str | None:
        """``<root>/tokenizer`` when that folder exists, else ``None``."""
        folder = self.root / "tokenizer"
        return str(folder) if folder.is_dir() else None

    @property
    def resolved_layout(self) -> str:
        """The layout actually used (``"auto"`` resolved against ``root``)."""
        return detect_layout(self.root) if self.layout == "auto" else self.layout

    def describe(self) -> str:
        """Name the root and layout for messages."""
        return f"OpenI data at {self.root} (layout {self.resolved_layout!r})"

    def has_data(self) -> bool:
        """Whether ``root`` holds the files of ``layout`` (``"auto"``: of either layout)."""
        found = found_layouts(self.root)
        return bool(found) if self.layout == "auto" else self.layout in found

    def missing_data_message(self) -> str:
        """Say what ``root`` holds instead of the files of ``layout``, and what to set."""
        found = found_layouts(self.root)
        wanted = {
            "csv": "the MONAI CSV files (train.csv, validation.csv, test.csv)",
            "raw": "the raw NLM release (NLMCXR_reports.tgz or ecgen-radiology/)",
            "auto": "OpenI data in either layout",
        }[self.layout]
        if found:
            other = found[0]
            names = {"csv": "the MONAI CSV files", "raw": "the raw NLM release"}
            return (
                f"{self.root} holds {names[other]}, not {wanted} that layout {self.layout!r} "
                f"reads; set `layout: {other}` (--data.init_args.source.init_args.layout "
                f"{other}) or `layout: auto`."
            )
        return (
            f"{self.root} holds no OpenI data: expected {wanted}. Point root at the folder "
            "holding the data, or set `download: true` to fetch the NLM release into it."
        )

    def load(self, modalities: Sequence[str] = MODALITIES) -> LoadedSamples:
        """Read the samples of the resolved layout.

        Args:
            modalities: The modalities that will be used; without ``"image"`` no view table is
                needed (no warning when none is found).

        Returns:
            Samples, problems and (CSV layout) the fixed split.

        Raises:
            DataFileNotFoundError: If the files of the layout are not in ``root`` (the message
                names what is there and the setting to change).
            CSVEncodingError: If a CSV file is not in ``encoding``.
        """
        if not self.has_data():
            raise DataFileNotFoundError(self.missing_data_message())
        if self.resolved_layout == "csv":
            return self._load_csv()
        return self._load_raw(check_modalities(modalities))

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

    def _view_metadata(self, modalities: Sequence[str]) -> dict[str, str] | None:
        """Load the view table, or ``None`` (first-image fallback) with a warning."""
        if self.view_filter_disabled:
            return None
        path = find_view_metadata(self.root, self.metadata_csv)
        if path is None:
            if "image" not in modalities:
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

    def _load_raw(self, modalities: Sequence[str]) -> LoadedSamples:
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
        metadata = self._view_metadata(modalities)
        views = self.views if metadata is not None else None
        for report in reports:
            image_ids = select_images(report, views, metadata, self.one_image_per_report)
            text = format_report(
                report.findings, report.impression, strip_xxxx=self.strip_anonymization
            )
            text = "" if report.is_empty else text
            labels = tuple(float(v) for v in report.labels_for(self.label_names))
            if not image_ids:
                # ``views is None``: the report lists no image at all.
                reason = NO_FRONTAL_IMAGE if views is not None else "no_image_listed"
                loaded.image_absent[report.report_id] = reason
                loaded.samples.append(
                    FusionSample(report.report_id, None, text, labels, group=report.report_id)
                )
                continue
            loaded.samples.extend(
                FusionSample(
                    image_id, self._image_path(image_id), text, labels, group=report.report_id
                )
                for image_id in image_ids
            )
        return loaded


__all__ = [
    "LAYOUTS",
    "METADATA_FILE_NAMES",
    "TSNE_FILE_NAME",
    "Layout",
    "OpenIDataset",
    "detect_layout",
    "find_view_metadata",
    "found_layouts",
]

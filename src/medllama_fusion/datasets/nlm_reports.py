"""Parse the raw NLM OpenI (Indiana University chest X-ray) release.

The release consists of ``NLMCXR_reports.tgz`` (3955 XML reports in ``ecgen-radiology/``) and
``NLMCXR_png.tgz`` (7470 PNG images). Each report XML holds the sections COMPARISON, INDICATION,
FINDINGS and IMPRESSION as ``<AbstractText Label="...">``, MeSH terms as ``<MeSH><major>`` and
``<MeSH><automatic>``, and one ``<parentImage id="CXR1_1_IM-0001-3001">`` per image; the image
file is ``NLMCXR_png/<id>.png``.

:func:`load_openi_reports` reads either the ``.tgz`` directly (no extraction) or the extracted
``ecgen-radiology`` folder and never raises for a bad file: it returns ``(reports, problems)``
where each :class:`ParseProblem` names the file and the error (malformed XML, missing fields,
empty FINDINGS and IMPRESSION). Whether a problem is an error or a skipped sample is decided by
the caller's bad-input policy.

XML is parsed with :mod:`xml.etree.ElementTree`. ``defusedxml`` is not a dependency; the parser
is only meant for the local, trusted NLM files (and files in the same format), not for XML from
untrusted sources.

View positions come from the DICOM metadata table shipped with torchxrayvision
(``nlmcxr_dicom_metadata.csv.gz``, columns ``imageid`` and ``View Position``; its image ids drop
the ``_<n>_`` part of the XML ids, e.g. ``CXR1_1_IM-0001-3001`` ↔ ``CXR1_IM-0001-3001``).
:func:`load_view_positions` reads it or any user CSV with the same two columns, optionally
filling blank view positions from a second CSV with the columns ``imageid`` and ``tsne-view``
(torchxrayvision's ``nlmcxr_tsne_pa.csv.gz``, values ``PA`` for frontal and ``L`` for lateral).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medllama_fusion.datasets.labels import OPENI_LABELS, labels_from_mesh

REPORTS_FOLDER = "ecgen-radiology"
"""Folder of the report XML files inside ``NLMCXR_reports.tgz``."""

IMAGES_FOLDER = "NLMCXR_png"
"""Folder of the PNG images after extracting ``NLMCXR_png.tgz``."""

REPORTS_ARCHIVE = "NLMCXR_reports.tgz"
IMAGES_ARCHIVE = "NLMCXR_png.tgz"

FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")
"""View positions treated as frontal."""

_SECTION_LABELS = ("FINDINGS", "IMPRESSION", "INDICATION", "COMPARISON")


# ---------------------------------------------------------------------------------------------
# data classes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParseProblem:
    """A report file that could not be used.

    Attributes:
        path: The file name (path inside the archive, or on disk).
        message: What is wrong, e.g. the XML parser error or ``"empty report"``.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class OpenIReport:
    """One radiology report of the OpenI release.

    Attributes:
        report_id: Report id from ``<uId id="CXR1"/>`` (falls back to ``CXR<file stem>``).
        findings: FINDINGS section text (empty string when absent).
        impression: IMPRESSION section text (empty string when absent).
        indication: INDICATION section text (empty string when absent).
        comparison: COMPARISON section text (empty string when absent).
        image_ids: Ids of the report's images (``NLMCXR_png/<id>.png``), in file order.
        mesh_major: Manually assigned MeSH terms, e.g. ``"Opacity/lung/base/left/mild"``.
        mesh_automatic: Automatically extracted MeSH terms.
        source: The file the report was read from.
    """

    report_id: str
    findings: str
    impression: str
    indication: str = ""
    comparison: str = ""
    image_ids: list[str] = field(default_factory=list)
    mesh_major: list[str] = field(default_factory=list)
    mesh_automatic: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def labels(self) -> list[int]:
        """The 14 :data:`~medllama_fusion.datasets.labels.OPENI_LABELS` from ``mesh_major``."""
        return labels_from_mesh(self.mesh_major, OPENI_LABELS)

    def labels_for(self, label_names: Sequence[str]) -> list[int]:
        """Return the labels named in ``label_names`` (any accepted spelling), in that order.

        Args:
            label_names: Label names, see
                :func:`~medllama_fusion.datasets.labels.normalize_label_name`.

        Returns:
            One ``0``/``1`` per name.
        """
        return labels_from_mesh(self.mesh_major, label_names)

    @property
    def is_empty(self) -> bool:
        """Whether both FINDINGS and IMPRESSION are empty."""
        return not self.findings.strip() and not self.impression.strip()


# ---------------------------------------------------------------------------------------------
# XML parsing
# ---------------------------------------------------------------------------------------------


def _text(element: ET.Element | None) -> str:
    """Return the whitespace-normalised text of an element (``""`` for ``None``)."""
    if element is None:
        return ""
    return " ".join("".join(element.itertext()).split())


def parse_report_xml(data: bytes | str, name: str) -> OpenIReport:
    """Parse one NLM report XML document.

    Args:
        data: The XML document.
        name: File name used for ``source``, the fallback id and error messages.

    Returns:
        The parsed report.

    Raises:
        ValueError: If the document is not well-formed XML or is not an ``eCitation`` report
            (the message names ``name``).
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise ValueError(f"malformed XML in {name}: {err}") from err
    if root.tag != "eCitation":
        raise ValueError(
            f"{name} is not an NLM OpenI report (root element <{root.tag}>, expected <eCitation>)"
        )
    sections = {label: "" for label in _SECTION_LABELS}
    for abstract in root.iter("AbstractText"):
        label = (abstract.get("Label") or "").strip().upper()
        if label in sections:
            sections[label] = _text(abstract)
    uid = root.find("uId")
    report_id = (uid.get("id") if uid is not None else None) or f"CXR{Path(name).stem}"
    image_ids = [img.get("id", "") for img in root.findall("parentImage")]
    if any(not image_id for image_id in image_ids):
        raise ValueError(f"{name} has a <parentImage> without an id attribute")
    return OpenIReport(
        report_id=report_id,
        findings=sections["FINDINGS"],
        impression=sections["IMPRESSION"],
        indication=sections["INDICATION"],
        comparison=sections["COMPARISON"],
        image_ids=image_ids,
        mesh_major=[_text(m) for m in root.findall("MeSH/major") if _text(m)],
        mesh_automatic=[_text(m) for m in root.findall("MeSH/automatic") if _text(m)],
        source=name,
    )


def _sort_key(name: str) -> tuple[int, int | str]:
    """Sort report files numerically by stem (``2.xml`` before ``10.xml``)."""
    stem = Path(name).stem
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def _iter_xml_tar(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member name, bytes)`` for every ``.xml`` member of a tar archive."""
    with tarfile.open(path, "r:*") as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")]
        for member in sorted(members, key=lambda m: _sort_key(m.name)):
            handle = archive.extractfile(member)
            if handle is not None:
                yield member.name, handle.read()


def _iter_xml_dir(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(file path, bytes)`` for every ``*.xml`` file of a folder."""
    for file in sorted(path.glob("*.xml"), key=lambda p: _sort_key(p.name)):
        yield str(file), file.read_bytes()


def resolve_reports_source(source: str | Path) -> Path:
    """Find the reports in ``source``: a ``.tgz``, an XML folder, or a root holding either.

    A root folder is searched for ``ecgen-radiology/`` first, then ``NLMCXR_reports.tgz``.

    Args:
        source: Path to ``NLMCXR_reports.tgz``, to ``ecgen-radiology/`` or to their parent.

    Returns:
        The archive or folder to read.

    Raises:
        FileNotFoundError: If no reports are found there.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / REPORTS_FOLDER).is_dir():
            return path / REPORTS_FOLDER
        if (path / REPORTS_ARCHIVE).is_file():
            return path / REPORTS_ARCHIVE
        if any(path.glob("*.xml")):
            return path
    raise FileNotFoundError(
        f"no OpenI reports at {path}: expected {REPORTS_ARCHIVE}, a {REPORTS_FOLDER}/ folder of "
        "XML files, or a folder holding either; download them with "
        "medllama_fusion.datasets.download.download_openi(root)"
    )


def iter_report_files(source: str | Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` of every report XML in an archive or folder, in numeric order.

    Args:
        source: See :func:`resolve_reports_source`.

    Yields:
        The file name and its raw content.
    """
    path = resolve_reports_source(source)
    if path.is_dir():
        yield from _iter_xml_dir(path)
    elif tarfile.is_tarfile(path):
        yield from _iter_xml_tar(path)
    else:
        yield str(path), path.read_bytes()


def load_openi_reports(
    source: str | Path, keep_empty: bool = False
) -> tuple[list[OpenIReport], list[ParseProblem]]:
    """Parse all reports of the release without crashing on a bad file.

    Args:
        source: ``NLMCXR_reports.tgz`` (read in place), the ``ecgen-radiology`` folder, or a
            folder holding either.
        keep_empty: Also return reports whose FINDINGS and IMPRESSION are both empty (they are
            listed in ``problems`` all the same).

    Returns:
        ``(reports, problems)``: the parsed usable reports, and one :class:`ParseProblem` per
        file that is malformed or whose FINDINGS and IMPRESSION are both empty (``"empty
        report"``; such reports are in ``reports`` only with ``keep_empty=True``).

    Raises:
        FileNotFoundError: If ``source`` holds no reports.
    """
    reports: list[OpenIReport] = []
    problems: list[ParseProblem] = []
    for name, data in iter_report_files(source):
        try:
            report = parse_report_xml(data, name)
        except ValueError as err:
            problems.append(ParseProblem(name, str(err)))
            continue
        if report.is_empty:
            problems.append(ParseProblem(name, "empty report: no FINDINGS and no IMPRESSION text"))
            if not keep_empty:
                continue
        reports.append(report)
    return reports, problems


# ---------------------------------------------------------------------------------------------
# view metadata and image selection
# ---------------------------------------------------------------------------------------------

_XML_ID_PART = re.compile(r"^(CXR\d+)_\d+_(IM-)")


def metadata_image_id(image_id: str) -> str:
    """Convert an XML image id to the id used by the DICOM metadata table.

    Args:
        image_id: An id such as ``"CXR1_1_IM-0001-3001"`` (or already ``"CXR1_IM-0001-3001"``).

    Returns:
        The id without the ``_<n>_`` part, e.g. ``"CXR1_IM-0001-3001"``.
    """
    return _XML_ID_PART.sub(r"\1_\2", image_id)


def _open_text(path: Path) -> io.TextIOBase:
    """Open a (possibly gzip-compressed) text file."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _read_columns(path: Path, id_column: str, value_column: str) -> dict[str, str]:
    """Read two columns of a CSV into ``{metadata_image_id(id): value.upper()}``."""
    if not path.is_file():
        raise FileNotFoundError(f"view metadata CSV {path} does not exist; pass an existing file")
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in (id_column, value_column) if c not in columns]
        if missing:
            raise ValueError(
                f"view metadata CSV {path} lacks the column(s) {missing}; it needs "
                f"{id_column!r} and {value_column!r} (found {columns[:8]}...)"
            )
        return {
            metadata_image_id(row[id_column].strip()): (row[value_column] or "").strip().upper()
            for row in reader
        }


def load_view_positions(
    metadata_csv: str | Path, tsne_csv: str | Path | None = None
) -> dict[str, str]:
    """Load image id → view position (``"PA"``, ``"AP"``, ``"LL"``, ... or ``""`` if unknown).

    Args:
        metadata_csv: The torchxrayvision ``nlmcxr_dicom_metadata.csv.gz`` or a CSV (optionally
            gzip-compressed) with the columns ``imageid`` and ``View Position``.
        tsne_csv: Optional CSV with the columns ``imageid`` and ``tsne-view`` (torchxrayvision's
            ``nlmcxr_tsne_pa.csv.gz``) used only where ``View Position`` is blank; its ``PA``
            means "frontal" and ``L`` is stored as ``"LATERAL"``.

    Returns:
        A mapping keyed by :func:`metadata_image_id` ids.

    Raises:
        FileNotFoundError: If a CSV does not exist.
        ValueError: If a CSV lacks the required columns.
    """
    views = _read_columns(Path(metadata_csv), "imageid", "View Position")
    if tsne_csv is not None:
        fill = _read_columns(Path(tsne_csv), "imageid", "tsne-view")
        for image_id, view in fill.items():
            if not views.get(image_id):
                views[image_id] = "LATERAL" if view == "L" else view
    return views


def select_images(
    report: OpenIReport,
    views: Iterable[str] | None = FRONTAL_VIEWS,
    metadata: Mapping[str, str] | None = None,
    one_per_report: bool = True,
) -> list[str]:
    """Choose the images of a report to use.

    Args:
        report: The report.
        views: Accepted view positions (case-insensitive); ``None`` accepts every image.
        metadata: Image id → view position from :func:`load_view_positions`. Required when
            ``views`` is not ``None``; images absent from it or with a blank view are dropped.
        one_per_report: Return at most the first accepted image (in XML order).

    Returns:
        The selected XML image ids (``NLMCXR_png/<id>.png``); possibly empty.

    Raises:
        ValueError: If ``views`` is given without ``metadata``.
    """
    if views is None:
        selected = list(report.image_ids)
    else:
        if metadata is None:
            raise ValueError(
                "select_images got views but no metadata; load it with load_view_positions(...) "
                "or pass views=None to keep every image"
            )
        wanted = {v.strip().upper() for v in views}
        selected = [
            image_id
            for image_id in report.image_ids
            if metadata.get(metadata_image_id(image_id), "") in wanted
        ]
    return selected[:1] if one_per_report else selected


__all__ = [
    "FRONTAL_VIEWS",
    "IMAGES_ARCHIVE",
    "IMAGES_FOLDER",
    "REPORTS_ARCHIVE",
    "REPORTS_FOLDER",
    "OpenIReport",
    "ParseProblem",
    "iter_report_files",
    "load_openi_reports",
    "load_view_positions",
    "metadata_image_id",
    "parse_report_xml",
    "resolve_reports_source",
    "select_images",
]

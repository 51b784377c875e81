"""Download and extract the raw NLM OpenI (Indiana University chest X-ray) release.

The release is two archives on the NLM Open-i server (:data:`OPENI_URLS`):

* ``NLMCXR_reports.tgz`` — 3955 report XMLs in ``ecgen-radiology/``. Its MD5 in
  :data:`OPENI_CHECKSUMS` was computed from the byte-identical copy of this archive that ships in
  the ``torchxrayvision`` 1.5.7 wheel (``torchxrayvision/data/NLMCXR_reports.tgz``, 1,112,632
  bytes); it was not re-verified against the NLM server, which was unreachable when this module
  was written.
* ``NLMCXR_png.tgz`` — 7470 PNG images in ``NLMCXR_png/``. No verified checksum is known, so
  the default entry is ``None``: the file is not verified (a warning is logged). Pass its MD5 via
  ``checksums={"NLMCXR_png.tgz": "..."}`` to verify it.

Files are fetched with :func:`torchvision.datasets.utils.download_url` (``file://`` URLs are
copied),
verified with :func:`~torchvision.datasets.utils.check_integrity` (MD5) and extracted with
:func:`~torchvision.datasets.utils.extract_archive`. Downloads are idempotent, also without a
checksum: a file is fetched under a temporary name and renamed when complete, and a marker file
``.<archive>.json`` next to it records its size and whether it was extracted. A later call skips
an archive that is extracted (even if the archive itself was deleted to save space), and skips
the download of an archive whose size matches its marker (or whose MD5 matches).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from torchvision.datasets.utils import (
    calculate_md5,
    check_integrity,
    download_url,
    extract_archive,
)

from medllama_fusion.errors import InputError

logger = logging.getLogger(__name__)

OPENI_URLS: tuple[str, ...] = (
    "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz",
    "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_png.tgz",
)
"""Official NLM download locations of the report and image archives."""

OPENI_CHECKSUMS: dict[str, str | None] = {
    "NLMCXR_reports.tgz": "fa5215d222be4eafc86e546ddc1429ab",
    "NLMCXR_png.tgz": None,
}
"""File name → expected MD5 hex digest (``None``: not verified, a warning is logged)."""


class ChecksumError(InputError):
    """A downloaded or existing file does not have the expected MD5 checksum."""


def _file_name(url: str) -> str:
    """Return the last path component of ``url``."""
    name = Path(urlparse(url).path).name
    if not name:
        raise InputError(
            f"cannot derive a file name from URL {url!r}; pass a URL ending in a file name."
        )
    return name


def marker_path(archive: str | Path) -> Path:
    """Return the marker file of ``archive`` (``.<name>.json`` in the same folder).

    Args:
        archive: The archive path.

    Returns:
        The marker path; it holds ``{"size": bytes, "extracted": bool}``.
    """
    archive = Path(archive)
    return archive.with_name(f".{archive.name}.json")


def _read_marker(archive: Path) -> dict[str, Any]:
    """Return the marker of ``archive`` (``{}`` when missing or unreadable)."""
    try:
        data = json.loads(marker_path(archive).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_marker(archive: Path, extracted: bool) -> None:
    """Record the size of ``archive`` and whether it was extracted."""
    state = {"size": archive.stat().st_size, "extracted": extracted}
    marker_path(archive).write_text(json.dumps(state))


def _is_complete(archive: Path, md5: str | None) -> bool:
    """Whether ``archive`` needs no download: MD5 matches, else its size matches its marker."""
    if md5 is not None:
        return check_integrity(archive, md5)
    if not archive.is_file():
        return False
    size = _read_marker(archive).get("size")
    # Without a marker the file was put there by hand: downloads never leave partial files.
    return size is None or size == archive.stat().st_size


def _fetch(url: str, target: Path) -> None:
    """Fetch ``url`` into ``target`` with torchvision (``file://``: copied, see below).

    ``file://`` URLs are copied here because torchvision's ``download_url`` needs a
    Content-Length, which local files do not send.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        shutil.copyfile(url2pathname(parsed.path), target)
    else:
        download_url(url, str(target.parent), filename=target.name)


def download_file(url: str, root: str | Path, md5: str | None = None) -> Path:
    """Download one file into ``root`` unless a complete copy is already there.

    Args:
        url: ``https://``, ``http://`` or ``file://`` URL.
        root: Destination folder (created if missing).
        md5: Expected MD5 hex digest; ``None`` skips verification with a logged warning.

    Returns:
        The path of the file.

    Raises:
        ChecksumError: If the downloaded file does not match ``md5``.
        OSError: If the download fails.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / _file_name(url)
    if _is_complete(target, md5):
        logger.info("%s already present%s", target, " and verified" if md5 else "")
        if not marker_path(target).is_file():
            _write_marker(target, extracted=False)
        return target
    if target.is_file():
        logger.warning("existing %s is incomplete or corrupt; downloading it again", target)
    marker_path(target).unlink(missing_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.unlink(missing_ok=True)  # torchvision would take a leftover for a complete file
    logger.info("downloading %s to %s", url, target)
    try:
        _fetch(url, partial)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise OSError(
            f"could not download {url} ({err}); check the network connection, or download the "
            f"file by hand to {target} and run again"
        ) from err
    partial.replace(target)
    if md5 is None:
        logger.warning(
            "no checksum known for %s; it was not verified. Pass checksums={%r: '<md5>'} to "
            "download_openi to verify it.",
            target,
            target.name,
        )
    elif not check_integrity(target, md5):
        raise ChecksumError(
            f"md5 mismatch for {target}: expected {md5}, got {calculate_md5(target)}. The file "
            "is corrupt or incomplete (or the expected value is wrong): delete it and run the "
            "download again, or pass the correct checksum."
        )
    _write_marker(target, extracted=False)
    return target


def download_openi(
    root: str | Path,
    urls: tuple[str, ...] | list[str] = OPENI_URLS,
    checksums: Mapping[str, str | None] | None = None,
    extract: bool = True,
) -> list[Path]:
    """Download (and extract) the raw OpenI release into ``root``; repeated calls do nothing.

    After extraction ``root`` holds ``ecgen-radiology/*.xml`` and ``NLMCXR_png/*.png``, the
    ``raw`` layout read by :func:`medllama_fusion.datasets.openi.load_openi_reports`. An archive
    already extracted here (its marker says so) is neither downloaded nor extracted again.

    Args:
        root: Destination folder (created if missing).
        urls: Archive URLs; default :data:`OPENI_URLS`.
        checksums: File name → expected MD5 hex digest (``None`` to skip); entries override
            :data:`OPENI_CHECKSUMS`. Files named in neither are not verified (warning).
        extract: Extract each archive into ``root``.

    Returns:
        The paths of the archives (an extracted archive deleted afterwards stays deleted).

    Raises:
        ChecksumError: If an archive does not match its checksum.
        OSError: If a download fails.
    """
    expected: dict[str, str | None] = dict(OPENI_CHECKSUMS)
    if checksums is not None:
        expected.update(checksums)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archives = []
    for url in urls:
        archive = root / _file_name(url)
        marker = _read_marker(archive)
        unchanged = not archive.is_file() or marker.get("size") == archive.stat().st_size
        if extract and marker.get("extracted") and unchanged:
            logger.info("%s already extracted in %s", archive.name, root)
            archives.append(archive)
            continue
        archive = download_file(url, root, expected.get(archive.name))
        if extract:
            logger.info("extracting %s", archive)
            extract_archive(str(archive), str(root))
            _write_marker(archive, extracted=True)
        archives.append(archive)
    return archives


__all__ = [
    "OPENI_CHECKSUMS",
    "OPENI_URLS",
    "ChecksumError",
    "download_file",
    "download_openi",
    "marker_path",
]

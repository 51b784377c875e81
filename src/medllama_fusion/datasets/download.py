"""Download and extract the raw NLM OpenI (Indiana University chest X-ray) release.

The release is two archives on the NLM Open-i server (:data:`OPENI_URLS`):

* ``NLMCXR_reports.tgz`` — 3955 report XMLs in ``ecgen-radiology/``. Its size and checksums in
  :data:`OPENI_CHECKSUMS` were computed from the byte-identical copy of this archive that ships in
  the ``torchxrayvision`` 1.5.7 wheel (``torchxrayvision/data/NLMCXR_reports.tgz``, 1,112,632
  bytes); they were not re-verified against the NLM server, which was unreachable when this module
  was written.
* ``NLMCXR_png.tgz`` — 7470 PNG images in ``NLMCXR_png/``. No verified checksum is known, so
  the default entry is ``None``: the file is downloaded and extracted with a logged warning. Pass
  a digest via ``checksums={"NLMCXR_png.tgz": Checksum(sha256="...")}`` to verify it.

Files are fetched with :mod:`urllib.request` (so ``file://`` URLs work, which the tests use) and
extracted with :func:`torchvision.datasets.utils.extract_archive`. An existing file with a
matching checksum is not downloaded again.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from torchvision.datasets.utils import extract_archive

logger = logging.getLogger(__name__)

OPENI_URLS: tuple[str, ...] = (
    "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz",
    "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_png.tgz",
)
"""Official NLM download locations of the report and image archives."""


@dataclass(frozen=True)
class Checksum:
    """Expected digest(s) of a downloaded file; every digest given is verified.

    Attributes:
        md5: Hex MD5 digest, or ``None``.
        sha256: Hex SHA-256 digest, or ``None``.
        size: Size in bytes, or ``None``.
    """

    md5: str | None = None
    sha256: str | None = None
    size: int | None = None


OPENI_CHECKSUMS: dict[str, Checksum | None] = {
    "NLMCXR_reports.tgz": Checksum(
        md5="fa5215d222be4eafc86e546ddc1429ab",
        sha256="8fb6de7eec73d8c3665067ad4bb003ccd57f971ae316d2642e1627ac7268667a",
        size=1_112_632,
    ),
    "NLMCXR_png.tgz": None,
}
"""File name → expected checksum (``None``: not verified, a warning is logged)."""

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A downloaded or existing file does not have the expected checksum."""


def _file_name(url: str) -> str:
    """Return the last path component of ``url``."""
    name = Path(urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot derive a file name from URL {url!r}; pass a URL ending in a file")
    return name


def file_digests(path: str | Path) -> tuple[str, str]:
    """Compute the MD5 and SHA-256 hex digests of a file.

    Args:
        path: The file.

    Returns:
        ``(md5, sha256)``.
    """
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def verify_checksum(path: str | Path, expected: Checksum) -> None:
    """Check a file against its expected size and digests.

    Args:
        path: The file.
        expected: The expected values; ``None`` fields are not checked.

    Raises:
        ChecksumError: If a value differs; the message names the file, the expected and actual
            value and says to delete the file and retry.
    """
    path = Path(path)
    actual_size = path.stat().st_size
    md5, sha256 = file_digests(path)
    for kind, want, got in (
        ("size", expected.size, actual_size),
        ("md5", expected.md5, md5),
        ("sha256", expected.sha256, sha256),
    ):
        if want is not None and str(want).lower() != str(got).lower():
            raise ChecksumError(
                f"{kind} mismatch for {path}: expected {want}, got {got}. The file is corrupt or "
                "incomplete (or the expected value is wrong): delete it and run the download "
                "again, or pass the correct checksum."
            )


def _fetch(url: str, target: Path) -> None:
    """Stream ``url`` into ``target`` via a temporary file (so partial files never remain)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "medllama-fusion"})
    logger.info("downloading %s to %s", url, target)
    try:
        with urllib.request.urlopen(request) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise OSError(
            f"could not download {url} ({err}); check the network connection, or download the "
            f"file by hand to {target} and run again"
        ) from err
    partial.replace(target)


def download_file(url: str, root: str | Path, checksum: Checksum | None = None) -> Path:
    """Download one file into ``root`` unless a copy with the right checksum is already there.

    Args:
        url: ``https://``, ``http://`` or ``file://`` URL.
        root: Destination folder.
        checksum: Expected checksum; ``None`` skips verification with a logged warning.

    Returns:
        The path of the downloaded file.

    Raises:
        ChecksumError: If the downloaded file does not match ``checksum``.
        OSError: If the download fails.
    """
    target = Path(root) / _file_name(url)
    if target.is_file() and checksum is not None:
        try:
            verify_checksum(target, checksum)
        except ChecksumError:
            logger.warning("existing %s has a wrong checksum; downloading it again", target)
        else:
            logger.info("%s already present and verified", target)
            return target
    _fetch(url, target)
    if checksum is None:
        logger.warning(
            "no checksum known for %s; it was not verified. Pass checksums={%r: Checksum("
            "sha256=...)} to download_openi to verify it.",
            target,
            target.name,
        )
    else:
        verify_checksum(target, checksum)
    return target


def download_openi(
    root: str | Path,
    urls: tuple[str, ...] | list[str] = OPENI_URLS,
    checksums: Mapping[str, Checksum | None] | None = None,
    extract: bool = True,
) -> list[Path]:
    """Download (and extract) the raw OpenI release into ``root``.

    After extraction ``root`` holds ``ecgen-radiology/*.xml`` and ``NLMCXR_png/*.png``, the
    ``raw`` layout read by :func:`medllama_fusion.datasets.openi.load_openi_reports`.

    Args:
        root: Destination folder (created if missing).
        urls: Archive URLs; default :data:`OPENI_URLS`.
        checksums: File name → expected :class:`Checksum` (``None`` to skip); entries override
            :data:`OPENI_CHECKSUMS`. Files named in neither are not verified (warning).
        extract: Extract each archive into ``root``.

    Returns:
        The paths of the downloaded archives.

    Raises:
        ChecksumError: If an archive does not match its checksum.
        OSError: If a download fails.
    """
    expected: dict[str, Checksum | None] = dict(OPENI_CHECKSUMS)
    if checksums is not None:
        expected.update(checksums)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archives = []
    for url in urls:
        archive = download_file(url, root, expected.get(_file_name(url)))
        if extract:
            logger.info("extracting %s", archive)
            extract_archive(str(archive), str(root))
        archives.append(archive)
    return archives


__all__ = [
    "OPENI_CHECKSUMS",
    "OPENI_URLS",
    "Checksum",
    "ChecksumError",
    "download_file",
    "download_openi",
    "file_digests",
    "verify_checksum",
]

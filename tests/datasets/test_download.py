from __future__ import annotations

import hashlib
import logging
import tarfile
from pathlib import Path
from typing import Any

import pytest

import medllama_fusion.datasets.download as download_module
from medllama_fusion.datasets.download import (
    OPENI_CHECKSUMS,
    OPENI_URLS,
    ChecksumError,
    download_file,
    download_openi,
    marker_path,
)
from medllama_fusion.errors import InputError
from tests.assets import asset_path


def _archives(tmp_path: Path) -> tuple[Path, Path]:
    """Build small stand-ins for NLMCXR_reports.tgz and NLMCXR_png.tgz."""
    src = tmp_path / "src"
    (src / "ecgen-radiology").mkdir(parents=True)
    (src / "ecgen-radiology" / "1.xml").write_text("<eCitation/>")
    (src / "NLMCXR_png").mkdir()
    (src / "NLMCXR_png" / "CXR1_1_IM-0001-3001.png").write_bytes(b"\x89PNG fake")
    server = tmp_path / "server"
    server.mkdir()
    reports = server / "NLMCXR_reports.tgz"
    with tarfile.open(reports, "w:gz") as tar:
        tar.add(src / "ecgen-radiology", arcname="ecgen-radiology")
    images = server / "NLMCXR_png.tgz"
    with tarfile.open(images, "w:gz") as tar:
        tar.add(src / "NLMCXR_png", arcname="NLMCXR_png")
    return reports, images


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


class Calls:
    """Serve ``https://example.org/<name>`` from ``server`` and count fetches and extractions."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, server: Path) -> None:
        self.downloads: list[str] = []
        self.extractions: list[str] = []
        extract = download_module.extract_archive

        def fetch(url: str, root: str, filename: str, **kwargs: Any) -> None:
            self.downloads.append(url)
            (Path(root) / filename).write_bytes((server / Path(url).name).read_bytes())

        def counted_extract(archive: str, *args: Any, **kwargs: Any) -> Any:
            self.extractions.append(Path(archive).name)
            return extract(archive, *args, **kwargs)

        monkeypatch.setattr(download_module, "download_url", fetch)
        monkeypatch.setattr(download_module, "extract_archive", counted_extract)


def test_download_and_extract_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports, images = _archives(tmp_path)
    calls = Calls(monkeypatch, reports.parent)
    root = tmp_path / "data"
    urls = [f"https://example.org/{reports.name}", f"https://example.org/{images.name}"]
    checksums = {"NLMCXR_reports.tgz": _md5(reports), "NLMCXR_png.tgz": None}
    with caplog.at_level(logging.WARNING, logger="medllama_fusion.datasets.download"):
        paths = download_openi(root, urls=urls, checksums=checksums)
    assert [p.name for p in paths] == ["NLMCXR_reports.tgz", "NLMCXR_png.tgz"]
    assert (root / "ecgen-radiology" / "1.xml").read_text() == "<eCitation/>"
    assert (root / "NLMCXR_png" / "CXR1_1_IM-0001-3001.png").is_file()
    assert "no checksum known" in caplog.text and "NLMCXR_png.tgz" in caplog.text
    assert not list(root.glob("*.part"))
    assert calls.downloads == urls
    assert calls.extractions == ["NLMCXR_reports.tgz", "NLMCXR_png.tgz"]

    # Second call: neither downloads nor extracts, also for the archive without a checksum.
    (root / "NLMCXR_png" / "CXR1_1_IM-0001-3001.png").unlink()  # would reappear on re-extraction
    assert download_openi(root, urls=urls, checksums=checksums) == paths
    assert len(calls.downloads) == 2 and len(calls.extractions) == 2
    assert not (root / "NLMCXR_png" / "CXR1_1_IM-0001-3001.png").exists()

    # The archive may be deleted after extraction (7 GB of PNGs): still nothing to do.
    (root / "NLMCXR_png.tgz").unlink()
    download_openi(root, urls=urls, checksums=checksums)
    assert len(calls.downloads) == 2 and len(calls.extractions) == 2


def test_no_checksum_file_with_its_recorded_size_is_not_downloaded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, images = _archives(tmp_path)
    calls = Calls(monkeypatch, images.parent)
    root = tmp_path / "data"
    url = f"https://example.org/{images.name}"
    first = download_file(url, root)
    assert marker_path(first).is_file()
    assert download_file(url, root) == first
    assert len(calls.downloads) == 1
    with open(first, "ab") as handle:  # no longer the recorded size: fetched again
        handle.write(b"junk")
    download_file(url, root)
    assert len(calls.downloads) == 2 and first.read_bytes() == images.read_bytes()


def test_file_urls_are_copied(tmp_path: Path) -> None:
    reports, _ = _archives(tmp_path)
    paths = download_openi(
        tmp_path / "data", urls=[reports.as_uri()], checksums={"NLMCXR_reports.tgz": _md5(reports)}
    )
    assert paths[0].read_bytes() == reports.read_bytes()
    assert (tmp_path / "data" / "ecgen-radiology" / "1.xml").is_file()


def test_checksum_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    reports, _ = _archives(tmp_path)
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as info:
        download_file(reports.as_uri(), tmp_path / "data", md5=wrong)
    message = str(info.value)
    assert isinstance(info.value, InputError)
    assert "NLMCXR_reports.tgz" in message and wrong in message and _md5(reports) in message
    assert "delete it" in message


def test_default_checksum_rejects_a_different_reports_archive(tmp_path: Path) -> None:
    reports, _ = _archives(tmp_path)
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        download_openi(tmp_path / "data", urls=[reports.as_uri()], extract=False)


def test_existing_verified_file_is_not_downloaded_again(tmp_path: Path) -> None:
    reports, _ = _archives(tmp_path)
    root = tmp_path / "data"
    first = download_file(reports.as_uri(), root, md5=_md5(reports))
    reports.unlink()  # the "server" copy is gone: a second download would fail
    assert download_file(reports.as_uri(), root, md5=_md5(first)) == first


def test_failed_download_names_url(tmp_path: Path) -> None:
    missing = (tmp_path / "nope.tgz").as_uri()
    with pytest.raises(OSError, match=r"nope\.tgz"):
        download_file(missing, tmp_path / "data")
    assert not list((tmp_path / "data").iterdir())  # no partial file, no marker


def test_official_urls() -> None:
    assert OPENI_URLS == (
        "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz",
        "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_png.tgz",
    )


@pytest.mark.real_assets
def test_reports_checksum_matches_torchxrayvision_copy(tmp_path: Path) -> None:
    archive = asset_path("torchxrayvision", "data/NLMCXR_reports.tgz")
    paths = download_openi(tmp_path, urls=[archive.as_uri()])
    assert _md5(paths[0]) == OPENI_CHECKSUMS["NLMCXR_reports.tgz"]
    assert paths[0].stat().st_size == 1_112_632
    assert len(list((tmp_path / "ecgen-radiology").glob("*.xml"))) == 3955

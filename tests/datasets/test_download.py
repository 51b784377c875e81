from __future__ import annotations

import hashlib
import logging
import tarfile
from pathlib import Path

import pytest

from medllama_fusion.datasets.download import (
    OPENI_CHECKSUMS,
    OPENI_URLS,
    Checksum,
    ChecksumError,
    download_file,
    download_openi,
    file_digests,
)
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


def _checksum(path: Path) -> Checksum:
    md5, sha256 = file_digests(path)
    return Checksum(md5=md5, sha256=sha256, size=path.stat().st_size)


def test_download_and_extract_from_file_urls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reports, images = _archives(tmp_path)
    root = tmp_path / "data"
    with caplog.at_level(logging.WARNING, logger="medllama_fusion.datasets.download"):
        paths = download_openi(
            root,
            urls=[reports.as_uri(), images.as_uri()],
            checksums={"NLMCXR_reports.tgz": _checksum(reports), "NLMCXR_png.tgz": None},
        )
    assert [p.name for p in paths] == ["NLMCXR_reports.tgz", "NLMCXR_png.tgz"]
    assert (root / "ecgen-radiology" / "1.xml").read_text() == "<eCitation/>"
    assert (root / "NLMCXR_png" / "CXR1_1_IM-0001-3001.png").is_file()
    assert "no checksum known" in caplog.text and "NLMCXR_png.tgz" in caplog.text
    assert not list(root.glob("*.part"))


def test_checksum_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    reports, _ = _archives(tmp_path)
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        download_file(reports.as_uri(), tmp_path / "data", Checksum(sha256=wrong))
    message = str(info.value)
    assert "NLMCXR_reports.tgz" in message
    assert wrong in message
    assert hashlib.sha256(reports.read_bytes()).hexdigest() in message
    assert "delete it" in message


def test_default_checksum_rejects_a_different_reports_archive(tmp_path: Path) -> None:
    reports, _ = _archives(tmp_path)
    with pytest.raises(ChecksumError, match="size mismatch"):
        download_openi(tmp_path / "data", urls=[reports.as_uri()], extract=False)


def test_existing_verified_file_is_not_downloaded_again(tmp_path: Path) -> None:
    reports, _ = _archives(tmp_path)
    expected = _checksum(reports)
    root = tmp_path / "data"
    first = download_file(reports.as_uri(), root, expected)
    reports.unlink()  # the "server" copy is gone: a second download would fail
    assert download_file(reports.as_uri(), root, expected) == first


def test_failed_download_names_url(tmp_path: Path) -> None:
    missing = (tmp_path / "nope.tgz").as_uri()
    with pytest.raises(OSError, match=r"nope\.tgz"):
        download_file(missing, tmp_path / "data")


def test_official_urls() -> None:
    assert OPENI_URLS == (
        "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz",
        "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_png.tgz",
    )


@pytest.mark.real_assets
def test_reports_checksum_matches_torchxrayvision_copy(tmp_path: Path) -> None:
    archive = asset_path("torchxrayvision", "data/NLMCXR_reports.tgz")
    paths = download_openi(tmp_path, urls=[archive.as_uri()])
    assert paths[0].stat().st_size == OPENI_CHECKSUMS["NLMCXR_reports.tgz"].size  # type: ignore[union-attr]
    assert len(list((tmp_path / "ecgen-radiology").glob("*.xml"))) == 3955

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import pytest

from medllama_fusion.datasets.labels import OPENI_LABELS
from medllama_fusion.datasets.nlm_reports import (
    FRONTAL_VIEWS,
    OpenIReport,
    load_openi_reports,
    load_view_positions,
    metadata_image_id,
    parse_report_xml,
    select_images,
)
from tests.assets import asset_path

# Same structure as ecgen-radiology/1.xml of the NLM release (trimmed of bibliographic fields).
_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{rid}"/>
   <pmcId id="{rid}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{rid}"/>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">{comparison}</AbstractText>
            <AbstractText Label="INDICATION">{indication}</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
{mesh}
   </MeSH>
{images}
</eCitation>
"""

_IMAGE = """   <parentImage id="{iid}">
      <figureId>F1</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/{iid}.jpg</url>
      </panel>
   </parentImage>"""


def _xml(
    rid: int,
    findings: str,
    impression: str,
    major: list[str],
    images: list[str],
    automatic: tuple[str, ...] = (),
    indication: str = "Positive TB test",
    comparison: str = "None.",
) -> str:
    mesh = [f"      <major>{m}</major>" for m in major]
    mesh += [f"      <automatic>{a}</automatic>" for a in automatic]
    return _XML.format(
        rid=rid,
        findings=findings,
        impression=impression,
        indication=indication,
        comparison=comparison,
        mesh="\n".join(mesh),
        images="\n".join(_IMAGE.format(iid=i) for i in images),
    )


FIXTURES = {
    "1.xml": _xml(
        1,
        "The cardiac silhouette and mediastinum size are within normal limits. "
        "There are no XXXX of a pleural effusion.",
        "Normal chest x-XXXX.",
        ["normal"],
        ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
    ),
    "2.xml": _xml(
        2,
        "Borderline cardiomegaly. Small right pleural effusion.",
        "Midline sternotomy wires and a right IJ catheter.",
        [
            "Cardiomegaly/borderline",
            "Pleural Effusion/right/small",
            "Catheters, Indwelling",
            "Lung/hypoinflation",
        ],
        ["CXR2_IM-0652-1001", "CXR2_IM-0652-2001"],
        automatic=("Pleural Effusion",),
    ),
    "10.xml": _xml(
        10,
        "Left basilar opacity. Calcified granuloma right upper lobe.",
        "",
        ["Opacity/lung/base/left/mild", "Calcified Granuloma/lung/upper lobe/right"],
        ["CXR10_IM-0002-2001"],
    ),
}

# Rows in file order 1, 2, 10 (numeric); hand-computed from the MeSH table.
EXPECTED_LABELS = {
    "CXR1": {"No-Finding"},
    "CXR2": {"Cardiomegaly", "Enlarged-Cardiomediastinum", "Pleural-Effusion", "Support-Devices"},
    "CXR10": {"Lung-Opacity"},
}


def _write(folder: Path, files: dict[str, str]) -> Path:
    xml_dir = folder / "ecgen-radiology"
    xml_dir.mkdir(parents=True)
    for name, text in files.items():
        (xml_dir / name).write_text(text, encoding="utf-8")
    return xml_dir


def _matrix(reports: list[OpenIReport]) -> list[list[int]]:
    return [r.labels for r in reports]


def test_parse_fixture_reports_and_label_matrix(tmp_path: Path) -> None:
    _write(tmp_path, FIXTURES)
    reports, problems = load_openi_reports(tmp_path)
    assert problems == []
    assert [r.report_id for r in reports] == ["CXR1", "CXR2", "CXR10"]
    expected = [
        [int(name in EXPECTED_LABELS[r.report_id]) for name in OPENI_LABELS] for r in reports
    ]
    assert _matrix(reports) == expected
    first = reports[0]
    assert first.findings.startswith("The cardiac silhouette")
    assert first.impression == "Normal chest x-XXXX."
    assert first.indication == "Positive TB test"
    assert first.comparison == "None."
    assert first.image_ids == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert reports[1].mesh_automatic == ["Pleural Effusion"]
    assert reports[2].impression == ""
    assert reports[1].labels_for(["Support_Devices", "No-Finding"]) == [1, 0]


def test_tgz_is_read_in_place_and_matches_folder(tmp_path: Path) -> None:
    xml_dir = _write(tmp_path / "src", FIXTURES)
    archive = tmp_path / "NLMCXR_reports.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(xml_dir, arcname="ecgen-radiology")
    from_tar, tar_problems = load_openi_reports(archive)
    from_dir, _ = load_openi_reports(xml_dir)
    assert tar_problems == []
    assert [r.report_id for r in from_tar] == [r.report_id for r in from_dir]
    assert _matrix(from_tar) == _matrix(from_dir)
    assert from_tar[0].source == "ecgen-radiology/1.xml"
    assert not (tmp_path / "ecgen-radiology").exists()  # nothing was extracted


def test_malformed_and_empty_reports_become_problems(tmp_path: Path) -> None:
    files = dict(FIXTURES)
    files["7.xml"] = FIXTURES["1.xml"].replace("</eCitation>", "")  # truncated file
    files["8.xml"] = _xml(8, "  ", "", ["No Indexing"], ["CXR8_IM-0001-1001"])
    files["9.xml"] = "<?xml version='1.0'?><html><body/></html>"
    _write(tmp_path, files)
    reports, problems = load_openi_reports(tmp_path)
    assert [r.report_id for r in reports] == ["CXR1", "CXR2", "CXR10"]
    by_file = {Path(p.path).name: p.message for p in problems}
    assert set(by_file) == {"7.xml", "8.xml", "9.xml"}
    assert "malformed XML" in by_file["7.xml"] and "7.xml" in by_file["7.xml"]
    assert by_file["8.xml"].startswith("empty report")
    assert "eCitation" in by_file["9.xml"]
    kept, kept_problems = load_openi_reports(tmp_path, keep_empty=True)
    assert [r.report_id for r in kept] == ["CXR1", "CXR2", "CXR8", "CXR10"]
    assert len(kept_problems) == 3


def test_parse_report_xml_error_names_file() -> None:
    with pytest.raises(ValueError, match=r"broken\.xml"):
        parse_report_xml(b"<eCitation><uId", "broken.xml")


def test_missing_source_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download_openi"):
        load_openi_reports(tmp_path / "nowhere")


def test_view_selection_with_user_metadata_csv(tmp_path: Path) -> None:
    _write(tmp_path, FIXTURES)
    reports, _ = load_openi_reports(tmp_path)
    csv_path = tmp_path / "views.csv"
    csv_path.write_text(
        "imageid,Patient ID,View Position\n"
        "CXR1_IM-0001-3001,1,LL\n"
        "CXR1_IM-0001-4001,1,PA\n"
        "CXR2_IM-0652-1001,2,AP\n"
        "CXR2_IM-0652-2001,2,PA\n"
        "CXR10_IM-0002-2001,10,\n",
        encoding="utf-8",
    )
    views = load_view_positions(csv_path)
    assert metadata_image_id("CXR1_1_IM-0001-3001") == "CXR1_IM-0001-3001"
    first, second, third = reports
    assert select_images(first, metadata=views) == ["CXR1_1_IM-0001-4001"]
    assert select_images(second, metadata=views, one_per_report=False) == [
        "CXR2_IM-0652-1001",
        "CXR2_IM-0652-2001",
    ]
    assert select_images(second, views=["pa"], metadata=views) == ["CXR2_IM-0652-2001"]
    assert select_images(third, metadata=views) == []  # blank view position
    assert select_images(third, views=None) == ["CXR10_IM-0002-2001"]
    tsne = tmp_path / "tsne.csv"
    tsne.write_text("imageid,tsne-view\nCXR10_IM-0002-2001,PA\nCXR1_1_IM-0001-3001,PA\n")
    filled = load_view_positions(csv_path, tsne)
    assert select_images(third, metadata=filled) == ["CXR10_IM-0002-2001"]
    assert filled["CXR1_IM-0001-3001"] == "LL"  # DICOM value wins over t-SNE
    with pytest.raises(ValueError, match="metadata"):
        select_images(first)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,view\nx,PA\n")
    with pytest.raises(ValueError, match="View Position"):
        load_view_positions(bad)


@pytest.mark.real_assets
def test_real_openi_reports() -> None:
    archive = asset_path("torchxrayvision", "data/NLMCXR_reports.tgz")
    metadata = asset_path("torchxrayvision", "data/nlmcxr_dicom_metadata.csv.gz")
    reports, problems = load_openi_reports(archive, keep_empty=True)
    assert len(reports) == 3955
    assert all(p.message.startswith("empty report") for p in problems)
    image_ids = [i for r in reports for i in r.image_ids]
    assert len(image_ids) == 7470 == len(set(image_ids))

    counts: Counter[str] = Counter()
    for report in reports:
        counts.update(name for name, v in zip(OPENI_LABELS, report.labels, strict=True) if v)
    print("\nper-label counts (MeSH mapping, 3955 reports):")
    for name in OPENI_LABELS:
        print(f"  {name:28s} {counts[name]:5d}")
    assert all(counts[name] > 0 for name in OPENI_LABELS), counts
    assert counts.most_common(1)[0][0] == "No-Finding"
    assert 1000 <= counts["No-Finding"] <= 2000
    assert all(counts[name] < 1000 for name in OPENI_LABELS if name != "No-Finding")
    assert 200 <= counts["Cardiomegaly"] <= 600
    no_finding = [r for r in reports if r.labels[OPENI_LABELS.index("No-Finding")]]
    assert all(sum(r.labels) == 1 for r in no_finding)

    views = load_view_positions(metadata)
    frontal = sum(views.get(metadata_image_id(i), "") in FRONTAL_VIEWS for i in image_ids)
    with_frontal = sum(bool(select_images(r, metadata=views)) for r in reports)
    print(
        f"frontal (PA/AP) images by DICOM metadata: {frontal} of {len(image_ids)}; "
        f"reports with a frontal image: {with_frontal}"
    )
    assert 3500 < frontal < 4500
    assert 2000 < with_frontal <= 3955

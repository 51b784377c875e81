from __future__ import annotations

from pathlib import Path

import pytest

from medllama_fusion.datasets.csv_reader import parse_label_value, read_samples_csv
from medllama_fusion.datasets.labels import OPENI_LABELS

MONAI_HEADER = "id,report," + ",".join(
    "Pleural_Other" if name == "Pleural-Other" else name for name in OPENI_LABELS
)


def monai_row(sample_id: str, report: str, positives: set[str]) -> str:
    cells = ["1" if name in positives else "0" for name in OPENI_LABELS]
    return ",".join([sample_id, f'"{report}"', *cells])


def test_monai_layout_labels_and_paths(tmp_path: Path) -> None:
    csv_path = tmp_path / "train.csv"
    csv_path.write_text(
        "\n".join(
            [
                MONAI_HEADER,
                monai_row(
                    "CXR1_IM-1",
                    "FINDINGS : Big heart. IMPRESSION : Cardiomegaly.",
                    {"Cardiomegaly"},
                ),
                monai_row("CXR2_IM-2", "FINDINGS :  Thick  pleura.", {"Pleural-Other", "Edema"}),
            ]
        )
        + "\n"
    )
    result = read_samples_csv(csv_path, label_names=list(OPENI_LABELS))
    assert result.problems == []
    first, second = result.samples
    assert first.id == "CXR1_IM-1" and first.image_path == tmp_path / "images" / "CXR1_IM-1.png"
    assert first.group == ""  # grouping by report is the MONAI data module's choice
    assert second.text == "FINDINGS : Thick pleura."
    expected = [0.0] * 14
    expected[OPENI_LABELS.index("Cardiomegaly")] = 1.0
    assert list(first.labels or ()) == expected
    expected = [0.0] * 14
    expected[OPENI_LABELS.index("Pleural-Other")] = 1.0  # matched despite the underscore
    expected[OPENI_LABELS.index("Edema")] = 1.0
    assert list(second.labels or ()) == expected
    subset = read_samples_csv(csv_path, label_names=["Edema", "Cardiomegaly"], strict_columns=False)
    assert [s.labels for s in subset.samples] == [(0.0, 1.0), (1.0, 0.0)]


def test_problems_are_collected_not_raised(tmp_path: Path) -> None:
    csv_path = tmp_path / "data.csv"
    csv_path.write_text(
        "id,report,Cardiomegaly,Extra\na,text,1,x\nb,,0,x\nc,text,maybe,x\na,dup,0,x\n"
    )
    result = read_samples_csv(csv_path, label_names=["Cardiomegaly", "Edema"])
    kinds = {(p.kind, p.item) for p in result.problems}
    assert "empty_report" not in {kind for kind, _ in kinds}  # a missing modality, not an error
    assert ("invalid_label", "c") in kinds
    assert ("duplicate_id", "a") in kinds
    assert ("unknown_label_column", f"{csv_path}:Extra") in kinds
    assert ("missing_label_column", f"{csv_path}:Edema") in kinds
    assert [s.id for s in result.samples] == ["a", "b", "c"]
    relaxed = read_samples_csv(csv_path, label_names=["Cardiomegaly"], strict_columns=False)
    assert "unknown_label_column" not in {p.kind for p in relaxed.problems}


def test_generic_csv_with_image_column_and_split(tmp_path: Path) -> None:
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text(
        "path,text,split,Effusion,Mass\n"
        "files/p1/s1.jpg,report one,train,1,-1\n"
        "files/p2/s2.dcm,report two,validate,,1.0\n"
    )
    result = read_samples_csv(
        csv_path,
        label_names=["Mass", "Effusion"],
        text_column="text",
        image_column="path",
        id_column=None,
        split_column="split",
        image_root=tmp_path / "imgs",
        strict_columns=False,
        uncertain_label=0.0,
    )
    assert result.problems == []
    assert [s.id for s in result.samples] == ["files/p1/s1", "files/p2/s2"]
    assert result.samples[1].image_path == tmp_path / "imgs" / "files/p2/s2.dcm"
    assert [s.labels for s in result.samples] == [(0.0, 1.0), (1.0, 0.0)]
    assert result.splits == {"files/p1/s1": "train", "files/p2/s2": "validate"}
    strict = read_samples_csv(
        csv_path,
        ["Mass"],
        text_column="text",
        image_column="path",
        id_column=None,
        strict_columns=False,
    )
    assert [p.kind for p in strict.problems] == ["invalid_label"]


def test_bad_structure_raises_with_argument_name(tmp_path: Path) -> None:
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("id,report\na,b\n")
    with pytest.raises(ValueError, match="text_column='findings'"):
        read_samples_csv(csv_path, ["Edema"], text_column="findings")
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        read_samples_csv(tmp_path / "missing.csv", ["Edema"])


@pytest.mark.parametrize(
    ("cell", "uncertain", "expected"),
    [
        ("1", None, 1.0),
        ("1.0", None, 1.0),
        ("", None, 0.0),
        ("0", None, 0.0),
        ("-1", None, None),
        ("-1", 1.0, 1.0),
        ("2", None, None),
        (None, None, 0.0),
    ],
)
def test_parse_label_value(
    cell: str | None, uncertain: float | None, expected: float | None
) -> None:
    assert parse_label_value(cell, uncertain) == expected

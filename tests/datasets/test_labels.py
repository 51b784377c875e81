from __future__ import annotations

import pytest

from medllama_fusion.datasets.labels import (
    MESH_RULES,
    MONAI_COLUMN_NAMES,
    OPENI_LABELS,
    labels_for_mesh_term,
    labels_from_mesh,
    mesh_mapping_markdown,
    normalize_label_name,
    normalize_label_names,
    split_mesh_term,
)


def _positive(vector: list[int]) -> set[str]:
    return {name for name, value in zip(OPENI_LABELS, vector, strict=True) if value}


def test_label_order_and_monai_columns() -> None:
    assert len(OPENI_LABELS) == 14
    assert OPENI_LABELS[0] == "Atelectasis"
    assert OPENI_LABELS[8] == "No-Finding"
    assert OPENI_LABELS[-1] == "Support-Devices"
    assert MONAI_COLUMN_NAMES["Pleural-Other"] == "Pleural_Other"
    assert MONAI_COLUMN_NAMES["Lung-Opacity"] == "Lung-Opacity"


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("Pleural_Other", "Pleural-Other"),
        ("pleural other", "Pleural-Other"),
        ("LUNG-OPACITY", "Lung-Opacity"),
        ("No_Finding", "No-Finding"),
        ("Enlarged Cardiomediastinum", "Enlarged-Cardiomediastinum"),
    ],
)
def test_normalize_label_name(spelling: str, expected: str) -> None:
    assert normalize_label_name(spelling) == expected


def test_normalize_label_name_errors() -> None:
    with pytest.raises(ValueError, match="Hernia"):
        normalize_label_name("Hernia")
    with pytest.raises(ValueError, match="twice"):
        normalize_label_names(["Pleural_Other", "Pleural-Other"])


def test_split_mesh_term() -> None:
    assert split_mesh_term("Opacity/lung/base/left/mild") == (
        "opacity",
        ["lung", "base", "left", "mild"],
    )
    assert split_mesh_term("Subcutaneous  Emphysema ") == ("subcutaneous emphysema", [])


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        (["normal"], {"No-Finding"}),
        (["Cardiomegaly/borderline"], {"Cardiomegaly", "Enlarged-Cardiomediastinum"}),
        (["Cardiomegaly/mild"], {"Cardiomegaly"}),
        (["Lung/hypoinflation"], set()),
        (["Opacity/lung/base/left/mild"], {"Lung-Opacity"}),
        (["Opacity/ribs/right"], set()),
        (["Calcified Granuloma/lung/upper lobe/right"], set()),
        (["Hydropneumothorax/right"], {"Pleural-Effusion", "Pneumothorax"}),
        (["Thickening/pleura/right", "Thickening/bronchovascular"], {"Pleural-Other"}),
        (["Catheters, Indwelling", "Fractures, Bone/ribs/left"], {"Support-Devices", "Fracture"}),
        (
            ["Pulmonary Congestion/mild", "Mediastinum/prominent"],
            {"Edema", "Enlarged-Cardiomediastinum"},
        ),
        (["Nodule/lung/right", "Mass/breast"], {"Lung-Lesion"}),
        (["normal", "Pneumonia/lower lobe"], {"Pneumonia"}),
        (["No Indexing"], set()),
        ([], set()),
    ],
)
def test_labels_from_mesh(terms: list[str], expected: set[str]) -> None:
    assert _positive(labels_from_mesh(terms)) == expected


def test_labels_from_mesh_subset_in_given_order() -> None:
    terms = ["Pleural Effusion/bilateral/small", "Pulmonary Atelectasis/base"]
    assert labels_from_mesh(terms, ["Pleural_Effusion", "No Finding", "atelectasis"]) == [1, 0, 1]


def test_labels_for_mesh_term_is_case_insensitive() -> None:
    assert labels_for_mesh_term("PULMONARY EDEMA/Interstitial") == {"Edema"}


def test_mesh_mapping_markdown_lists_every_rule() -> None:
    table = mesh_mapping_markdown()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(MESH_RULES) + 1  # header + rules + No-Finding row
    assert "| Hydropneumothorax | any | Pneumothorax |" in table
    assert "| normal | no other label fires | No-Finding |" in table
    assert set(OPENI_LABELS) <= {row.rsplit("|", 2)[-2].strip() for row in rows[1:]}

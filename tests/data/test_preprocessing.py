"""The preprocessing record: masking modes, the round trip through checkpoints, one definition."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from medllama_fusion.data.preprocessing import Augmentation, Preprocessing
from medllama_fusion.data.text import mask_label_words
from medllama_fusion.datamodules import FusionDataModule
from medllama_fusion.datasets import OpenIDataset
from medllama_fusion.errors import InputError

REPORT = "The heart is enlarged. No pleural effusion. Compared with the prior study."
SRC = Path(__file__).resolve().parents[2] / "src" / "medllama_fusion"


def test_openi_labels_sentence_mode_drops_label_sentences() -> None:
    labels = ["Cardiomegaly", "Pleural_Effusion"]
    words = mask_label_words(REPORT, labels, mode="words")
    assert "effusion" not in words.lower() and "enlarged" in words
    sentence = mask_label_words(REPORT, labels, mode="sentence")
    assert "enlarged" not in sentence and "effusion" not in sentence.lower()
    assert sentence == "Compared with the prior study."


def test_literal_label_names_sentence_mode() -> None:
    text = "Small granuloma right apex. Old rib fracture noted! Lungs are clear."
    assert mask_label_words(text, ["granuloma"], mode="words") == (
        "Small right apex. Old rib fracture noted! Lungs are clear."
    )
    assert mask_label_words(text, ["granuloma"], mode="sentence") == (
        "Old rib fracture noted! Lungs are clear."
    )


def test_data_module_passes_mask_mode(demo_root: Path) -> None:
    dm = FusionDataModule(
        OpenIDataset(demo_root),
        preprocessing=Preprocessing(mask_label_words=True, mask_mode="sentence"),
    )
    assert dm.preprocessing.texts([REPORT]) == ["Compared with the prior study."]
    with pytest.raises(InputError, match="mask_mode"):
        Preprocessing(mask_mode="phrase")  # type: ignore[arg-type]


def test_the_data_module_completes_the_record(demo_root: Path) -> None:
    dm = FusionDataModule(OpenIDataset(demo_root), preprocessing=Preprocessing(max_length=32))
    record = dm.preprocessing
    assert record.label_names == tuple(OpenIDataset(demo_root).label_names)
    assert record.tokenizer == str((demo_root / "tokenizer").resolve())
    assert record.pad_token_id is None  # the tokenizer is read at setup
    dm.setup()
    assert dm.preprocessing.pad_token_id == dm.preprocessing.loaded_tokenizer.pad_token_id


def test_record_round_trip_through_json(demo_root: Path) -> None:
    dm = FusionDataModule(
        OpenIDataset(demo_root),
        preprocessing=Preprocessing(
            max_length=40, image_size=48, mask_label_words=True, modalities=("text",)
        ),
    )
    dm.setup()
    stored = json.loads(json.dumps(dm.preprocessing.to_dict()))
    again = Preprocessing.from_dict(stored)
    assert again == dm.preprocessing
    assert again.label_names == dm.preprocessing.label_names
    assert again.pad_token_id == dm.preprocessing.pad_token_id
    with pytest.raises(InputError, match=r"unknown preprocessing settings \['colour'\]"):
        Preprocessing.from_dict({**stored, "colour": True}, source="x.json")


def test_encode_equals_the_data_module_tokens(demo_root: Path) -> None:
    dm = FusionDataModule(
        OpenIDataset(demo_root),
        preprocessing=Preprocessing(max_length=20, mask_label_words=True, mask_mode="sentence"),
    )
    dm.setup()
    dataset = dm.datasets["test"]
    reports = [sample.text for sample in dataset.samples]
    assert dm.preprocessing.encode(reports) == dataset.input_ids
    one = dm.preprocessing.encode(reports[:1])  # alone or in a batch: the same ids
    assert one == dataset.input_ids[:1]


def test_image_transform_is_augmented_only_for_training() -> None:
    record = Preprocessing(image_size=16)
    image = torch.full((1, 16, 16), 128, dtype=torch.uint8)
    plain = record.image_transform(train=True, augmentation=Augmentation(enabled=False))(image)
    assert torch.equal(plain, record.image_transform()(image))
    assert torch.allclose(record.image(image.numpy()[0]), plain)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_length": 0}, "max_length"),
        ({"image_std": 0.0}, "image_std"),
        ({"modalities": ()}, "modalities"),
        ({"length_buckets": "always"}, "length_buckets"),
        ({"length_buckets": [64, 32]}, "length_buckets"),
    ],
)
def test_invalid_settings_are_input_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        Preprocessing(**kwargs)  # type: ignore[arg-type]


LINKED = {("models/vision.py", "image_size")}
"""The vision encoder's input size: the command line sets it from ``preprocessing.image_size``."""


def _fields_and_parameters(path: Path) -> list[tuple[str, str, int]]:
    """(kind, name, line) of every class-body annotation and ``__init__`` parameter."""
    found: list[tuple[str, str, int]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                found.append(("field", item.target.id, item.lineno))
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                args = (*item.args.args, *item.args.kwonlyargs)
                found += [("parameter", a.arg, item.lineno) for a in args]
    return found


def test_each_preprocessing_field_is_declared_once() -> None:
    """Only the record declares a preprocessing setting.

    No other dataclass has a field of that name (the sources select ``label_names``, which the
    record copies), and no data module or inference class takes one as an argument.
    """
    settings = {f.name for f in dataclasses.fields(Preprocessing)}
    surfaces = ("datamodules/", "inference/")
    duplicates = []
    for path in SRC.rglob("*.py"):
        where = str(path.relative_to(SRC))
        if where == "data/preprocessing.py":
            continue
        for kind, name, line in _fields_and_parameters(path):
            if name not in settings or (where, name) in LINKED:
                continue
            if kind == "field" and name != "label_names":
                duplicates.append(f"{where}:{line} field {name}")
            if kind == "parameter" and where.startswith(surfaces) and name != "modalities":
                duplicates.append(f"{where}:{line} argument {name}")
    assert duplicates == []

"""The data modules' ``mask_mode``: word or sentence masking of label evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from medllama_fusion.datamodules import OpenIDataModule
from medllama_fusion.datamodules.base import _mask_generic_label_words
from medllama_fusion.datasets.base import FusionSample
from medllama_fusion.errors import InputError

REPORT = "The heart is enlarged. No pleural effusion. Compared with the prior study."


def test_openi_labels_sentence_mode_drops_label_sentences() -> None:
    labels = ["Cardiomegaly", "Pleural_Effusion"]
    words = _mask_generic_label_words(REPORT, labels, "words")
    assert "effusion" not in words.lower() and "enlarged" in words
    sentence = _mask_generic_label_words(REPORT, labels, "sentence")
    assert "enlarged" not in sentence and "effusion" not in sentence.lower()
    assert sentence == "Compared with the prior study."


def test_literal_label_names_sentence_mode() -> None:
    text = "Small granuloma right apex. Old rib fracture noted! Lungs are clear."
    assert _mask_generic_label_words(text, ["granuloma"], "words") == (
        "Small right apex. Old rib fracture noted! Lungs are clear."
    )
    assert _mask_generic_label_words(text, ["granuloma"], "sentence") == (
        "Old rib fracture noted! Lungs are clear."
    )


def test_data_module_passes_mask_mode(demo_root: Path) -> None:
    dm = OpenIDataModule(str(demo_root), mask_label_words=True, mask_mode="sentence")
    sample = FusionSample(id="r1", image_path=None, text=REPORT)
    assert dm.prepare_texts([sample]) == ["Compared with the prior study."]
    with pytest.raises(InputError, match="mask_mode"):
        OpenIDataModule(str(demo_root), mask_mode="phrase")

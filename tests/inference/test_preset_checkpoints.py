"""The library's own checkpoints, from every shipped preset, open without trusting them.

Each preset is fitted for one step with a tiny random backbone in place of LLaMA-2-7B (the
checkpoint's contents are the preset's: its callbacks, schedule, precision and fusion), then
opened by the pipeline (``weights_only=True``) and, for the quickstart and one paper preset, by
``explain`` and ``export`` through the command line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medllama_fusion.cli.main import main
from medllama_fusion.configs import list_presets
from medllama_fusion.demo import make_demo_dataset
from medllama_fusion.inference import FusionPipeline
from medllama_fusion.inference.checkpoints import load_checkpoint

TINY_PAPER = """
# The paper recipe on a tiny random backbone (a YAML overlay: `pretrained: null` must be YAML).
model:
  init_args:
    compile: false
    fusion:
      init_args:
        backbone:
          pretrained: null
          dtype: float32
          config: {vocab_size: 512, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 12,
                   num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 128}
        vision:
          patch_size: 8
trainer:
  precision: 32-true
data:
  init_args:
    preprocessing:
      image_size: 32
    loader:
      num_workers: 0
"""
SHORT = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "1",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
]


def _preset_args(preset: str, root: Path, folder: Path) -> list[str]:
    args = ["--config", preset]
    if preset.startswith("paper/"):
        overlay = folder / "tiny_paper.yaml"
        overlay.write_text(TINY_PAPER)
        args += ["--config", str(overlay)]
    return [*args, "--data.init_args.source.init_args.root", str(root)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(
        tmp_path_factory.mktemp("presets") / "demo", n_reports=40, image_size=32, seed=4
    )


@pytest.mark.slow
@pytest.mark.parametrize("preset", list_presets())
def test_preset_checkpoints_open_without_the_opt_in(
    preset: str, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    common = _preset_args(preset, root, tmp_path)
    main(["fit", *common, *SHORT])
    (ckpt,) = sorted((tmp_path / "outputs").rglob("last.ckpt"))
    assert ckpt.parent.parent.parent == tmp_path / "outputs" / preset  # the preset's run folder
    load_checkpoint(ckpt)  # weights_only=True: nothing but tensors and plain values
    pipe = FusionPipeline.from_checkpoint(ckpt, map_location="cpu")
    assert pipe.label_names and pipe.preprocessing.pad_token_id is not None
    if preset not in ("quickstart", "paper/mixed_r2"):
        return
    main(["explain", *common, "--ckpt_path", "last", "--first", "1", "--n_steps", "4"])
    assert sorted(p.suffix for p in (tmp_path / "explanations").iterdir()) == [".html", ".png"]
    main(["export", *common, "--ckpt_path", "last", "--output_dir", str(tmp_path / "model")])
    exported = FusionPipeline.from_pretrained(tmp_path / "model")
    assert exported.preprocessing == pipe.preprocessing.complete(
        tokenizer=exported.preprocessing.tokenizer
    )

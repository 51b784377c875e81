"""The README's main job: the quickstart preset learns on the demo data, for more than one seed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from medllama_fusion.cli.main import cli_main
from medllama_fusion.configs import preset_path

CHANCE = 0.5
MARGIN = 0.25
"""Both seeds must reach a validation AUROC of at least chance + MARGIN (the preset gets ~0.89)."""


def _fit(config: str, root: Path, out: Path) -> dict[str, float]:
    cli = cli_main(
        [
            "fit",
            "--config",
            config,
            "--data.init_args.source.init_args.root",
            str(root),
            "--trainer.default_root_dir",
            str(out),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    assert cli.trainer.current_epoch == cli.trainer.max_epochs  # ran to the end
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}


def _second_seed_config(tmp_path: Path, seed: int, epochs: int) -> Path:
    """The quickstart preset with every seed set to ``seed`` and ``epochs`` epochs."""
    config = yaml.safe_load(preset_path("quickstart").read_text())
    config["seed_everything"] = seed
    config["trainer"]["max_epochs"] = epochs
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("EpochSeed"):
            callback["init_args"]["seed"] = seed
    config["model"]["init_args"]["fusion"]["init_args"]["backbone"]["init_seed"] = seed
    path = tmp_path / f"quickstart_seed{seed}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_quickstart_preset_learns(tmp_path: Path) -> None:
    demo = tmp_path / "demo_data"
    metrics = _fit("quickstart", demo, tmp_path / "outputs")
    auroc = metrics["val/auroc"]
    print(f"quickstart: val/auroc {auroc:.4f}")
    assert (demo / "tokenizer").is_dir()  # generated on first use
    assert auroc > CHANCE + MARGIN
    per_class = [v for k, v in metrics.items() if k.startswith("val/auroc/")]
    assert len(per_class) == 14 and sum(not math.isnan(v) for v in per_class) == 14


@pytest.mark.slow
def test_quickstart_recipe_learns_with_another_seed(tmp_path: Path) -> None:
    """Another initialisation and batch order learn too (half the epochs keep it affordable)."""
    config = _second_seed_config(tmp_path, seed=1, epochs=6)
    metrics = _fit(str(config), tmp_path / "demo_data", tmp_path / "outputs")
    auroc = metrics["val/auroc"]
    print(f"quickstart, seed 1, 6 epochs: val/auroc {auroc:.4f}")
    assert auroc > CHANCE + MARGIN

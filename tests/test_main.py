from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medllama_fusion.configs import list_presets, preset_path
from medllama_fusion.main import cli_main


def test_presets_listed_and_found() -> None:
    names = list_presets()
    assert "quickstart" in names
    for variant in ("parallel", "serial", "mixed"):
        for r in (2, 4, 8):
            assert f"paper/{variant}_r{r}" in names
    with pytest.raises(FileNotFoundError, match="quickstart"):
        preset_path("nope")
    out = subprocess.run(
        [sys.executable, "-m", "medllama_fusion.configs", "quickstart"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == str(preset_path("quickstart"))


@pytest.mark.parametrize(
    "name", ["quickstart", "paper/parallel_r2", "paper/serial_r4", "paper/mixed_r8"]
)
def test_print_config_parses_presets(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--config", str(preset_path(name)), "--print_config"])
    assert exc.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    fusion = config["model"]["init_args"]["fusion"]
    assert fusion["class_path"].endswith("Fusion")
    if name.startswith("paper/"):
        r = int(name[-1])
        lora = fusion["init_args"]["lora"]
        assert lora["r"] == r and len(lora["target_modules"]) * r == 8  # the paper's budget
        assert config["trainer"]["precision"] == "bf16-mixed"
        assert config["trainer"]["max_epochs"] == 15
        assert config["data"]["init_args"]["batch_size"] == 20
        assert config["model"]["init_args"]["lr"] == 1e-4


def test_paper_presets_differ_only_in_variant_and_rank() -> None:
    base = yaml.safe_load(preset_path("paper/parallel_r2").read_text())
    for variant in ("parallel", "serial", "mixed"):
        for r in (2, 4, 8):
            cfg = yaml.safe_load(preset_path(f"paper/{variant}_r{r}").read_text())
            cfg["model"]["init_args"]["fusion"]["class_path"] = "X"
            cfg["model"]["init_args"]["fusion"]["init_args"]["lora"] = {}
            cfg["trainer"]["default_root_dir"] = "X"
            ref = yaml.safe_load(yaml.safe_dump(base))
            ref["model"]["init_args"]["fusion"]["class_path"] = "X"
            ref["model"]["init_args"]["fusion"]["init_args"]["lora"] = {}
            ref["trainer"]["default_root_dir"] = "X"
            assert cfg == ref


def test_preset_names_resolve_in_config_arguments(tmp_path: Path) -> None:
    from medllama_fusion.main import resolve_preset_configs

    own = tmp_path / "quickstart"  # the user's own files pass through unchanged
    own.write_text("seed_everything: 1\n")
    argv = [
        "fit",
        "--config",
        "quickstart",
        "--config=paper/mixed_r2",
        "-c",
        str(own),
        "--x",
        "quickstart",
    ]
    assert resolve_preset_configs(argv) == [
        "fit",
        "--config",
        str(preset_path("quickstart")),
        f"--config={preset_path('paper/mixed_r2')}",
        "-c",
        str(own),
        "--x",
        "quickstart",
    ]

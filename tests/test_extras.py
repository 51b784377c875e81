"""Each optional feature without its extra stops with one line naming the pip command to run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from medllama_fusion.errors import InputError
from medllama_fusion.extras import EXTRAS, missing_extra, require

ROOT = Path(__file__).resolve().parents[1]


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import <module>`` fail as if the package were not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _says_install(error: BaseException | str, extra: str) -> None:
    text = str(error)
    assert f'pip install "medllama-fusion[{extra}]"' in text, text
    assert "\n" not in text  # one line


def _pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)  # type: ignore[no-any-return]


def test_every_extra_is_declared_and_in_all() -> None:
    optional = _pyproject()["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(optional)
    for extra, modules in EXTRAS.items():
        declared = " ".join(optional[extra]).lower()
        for module in modules:
            assert module in declared, (extra, module)
    assert optional["all"] == [f"medllama-fusion[{','.join(EXTRAS)}]"]
    assert "medllama-fusion[all,docs]" in optional["test"]
    core = " ".join(_pyproject()["project"]["dependencies"]).lower()
    assert not [m for modules in EXTRAS.values() for m in modules if m in core]


def test_require_passes_when_installed_and_names_the_extra_when_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require("explain", "explanations")  # the test extras install every extra
    assert missing_extra("plots", "plots") is None
    _hide(monkeypatch, "captum", "matplotlib")
    with pytest.raises(InputError) as info:
        require("explain", "explanations")
    assert str(info.value) == (
        "explanations: captum and matplotlib are not installed; "
        'run: pip install "medllama-fusion[explain]"'
    )


def test_qlora_without_bitsandbytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from medllama_fusion.models import BackboneConfig, LlamaBackbone
    from medllama_fusion.models.backbone import quantize_linear_layers

    _hide(monkeypatch, "bitsandbytes")
    tiny = dict(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    with pytest.raises(InputError) as info:
        LlamaBackbone(BackboneConfig(config=tiny, num_text_layers=1, quantization="4bit"))
    _says_install(info.value, "qlora")
    assert "quantization='4bit'" in str(info.value)
    with pytest.raises(InputError) as info:
        quantize_linear_layers(torch.nn.Sequential(torch.nn.Linear(4, 4)), "8bit", torch.float32)
    _says_install(info.value, "qlora")


def test_gguf_without_gguf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from medllama_fusion.data.text import load_tokenizer
    from medllama_fusion.models import BackboneConfig, LlamaBackbone

    file = tmp_path / "model.gguf"
    file.write_bytes(b"GGUF")
    _hide(monkeypatch, "gguf")
    with pytest.raises(InputError) as info:
        LlamaBackbone(BackboneConfig(pretrained=str(file)))
    _says_install(info.value, "gguf")
    with pytest.raises(InputError) as info:
        LlamaBackbone(BackboneConfig(pretrained=str(tmp_path), gguf_file=file.name))
    _says_install(info.value, "gguf")
    with pytest.raises(InputError) as info:
        load_tokenizer(file)
    _says_install(info.value, "gguf")


def test_dicom_without_pydicom(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A DICOM file is a missing extra, not a corrupt image, when pydicom is absent."""
    from medllama_fusion.data.images import read_image, read_resized, verify_image

    file = tmp_path / "film.dcm"
    file.write_bytes(b"\0" * 128 + b"DICM")
    _hide(monkeypatch, "pydicom")
    for read in (read_image, verify_image, lambda path: read_resized(path, 16)):
        with pytest.raises(InputError) as info:
            read(file)
        _says_install(info.value, "dicom")


def test_streaming_without_litdata(monkeypatch: pytest.MonkeyPatch) -> None:
    from medllama_fusion.data.streaming import require_litdata

    _hide(monkeypatch, "litdata")
    with pytest.raises(InputError) as info:
        require_litdata()
    _says_install(info.value, "streaming")


@pytest.mark.parametrize("hidden", ["captum", "matplotlib"])
def test_explain_functions_without_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hidden: str
) -> None:
    import numpy as np

    from medllama_fusion.inference.explain.attribution import integrated_gradients
    from medllama_fusion.inference.explain.render import save_overlay

    _hide(monkeypatch, hidden)
    with pytest.raises(InputError) as info:  # checked before the model is touched
        integrated_gradients(None, 0, None, None, None)  # type: ignore[arg-type]
    _says_install(info.value, "explain")
    with pytest.raises(InputError) as info:
        save_overlay(np.zeros((4, 4)), {}, {}, tmp_path / "x.png")
    _says_install(info.value, "explain")


def test_explain_command_without_captum_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medllama_fusion.cli.main import main

    _hide(monkeypatch, "captum")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["explain", "--config", "quickstart", "--ckpt_path", str(tmp_path / "none.ckpt")])
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("medllama-fusion: error: explain: captum")
    _says_install(errors[0], "explain")


def test_plots_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from medllama_fusion.metrics import auroc_report, plot_reliability, plot_roc_curves

    preds, target = torch.rand(20, 2), torch.tensor([[0, 1], [1, 0]] * 10)
    _hide(monkeypatch, "matplotlib")
    with pytest.raises(InputError) as info:
        plot_roc_curves(preds, target, auroc_report(preds, target, ["a", "b"]), tmp_path / "r.png")
    _says_install(info.value, "plots")
    with pytest.raises(InputError) as info:
        plot_reliability(preds, target, tmp_path / "d.png")
    _says_install(info.value, "plots")


def test_test_without_matplotlib_skips_the_pictures_with_a_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``test`` still writes every table; each picture is skipped with a note saying why."""
    from lightning.pytorch import Trainer

    from medllama_fusion.trainers import FusionClassifier, OperatingPoints
    from tests.trainers.helpers import ContractDataModule, tiny_fusion

    _hide(monkeypatch, "matplotlib")
    report = tmp_path / "report"
    model = FusionClassifier(
        tiny_fusion(),
        label_names=["a", "b", "c"],
        bootstrap_resamples=0,
        report_dir=str(report),
        min_positives=2,
    )
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[OperatingPoints()],
    )
    trainer.test(model, datamodule=ContractDataModule(), verbose=False)
    files = {path.name for path in report.iterdir()}
    assert {"test_auroc.md", "test_auroc.csv", "operating_points.md"} <= files
    assert not {"roc_curves.png", "reliability_diagram.png"} & files
    notes = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line]
    assert sorted(note.split(":")[0] for note in notes) == [
        "reliability_diagram.png skipped",
        "roc_curves.png skipped",
    ]
    for note in notes:
        _says_install(note, "plots")

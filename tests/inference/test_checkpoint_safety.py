"""Opening a checkpoint never runs code, and a bad checkpoint gets one clear message.

Every entry point that opens a ``.ckpt`` is tried: ``FusionPipeline.from_checkpoint`` and the
command line's ``fit``/``validate``/``test``/``predict``/``explain``/``export`` with
``--ckpt_path`` (with and without ``--config``). A checkpoint that carries code, a truncated
download, a file that is not a checkpoint, weights of another LoRA rank and another label set
each end in one message naming the culprit, exit status 2 and no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from medllama_fusion.cli.main import DEBUG_ENV, main
from medllama_fusion.errors import InputError
from medllama_fusion.inference import FusionPipeline
from medllama_fusion.inference.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "tests" / "conf" / "tiny.yaml"


class _RunsCode:
    """Unpickling this object calls ``open(path, "w")``: a marker that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from medllama_fusion.demo import make_demo_dataset

    base = tmp_path_factory.mktemp("unsafe")
    root = make_demo_dataset(base / "demo", n_reports=40, image_size=32, seed=2, layout="both")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)
        main(
            [
                "fit",
                "--config",
                str(CONF),
                "--data.init_args.source.init_args.root",
                str(root),
                "--trainer.default_root_dir",
                str(base / "out"),
                "--trainer.limit_val_batches",
                "1",
            ]
        )
    (good,) = sorted((base / "out").rglob("last.ckpt"))
    state = torch.load(good, weights_only=True, map_location="cpu")
    evil = base / "evil.ckpt"
    torch.save({**state, "extra": _RunsCode(base / "marker")}, evil)
    truncated = base / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = base / "notes.ckpt"
    text.write_text("these are my notes, not a checkpoint\n")
    notebook = base / "notebook.ckpt"  # trained in Python: no fusion in its hyperparameters
    state_nb = dict(state)
    state_nb["hyper_parameters"] = {
        k: v for k, v in state["hyper_parameters"].items() if k not in ("fusion", "_class_path")
    }
    state_nb["hyper_parameters"].pop("_instantiator", None)
    torch.save(state_nb, notebook)
    return {
        "root": root,
        "base": base,
        "good": good,
        "evil": evil,
        "marker": base / "marker",
        "truncated": truncated,
        "text": text,
        "notebook": notebook,
    }


def _run(args: list[str], cwd: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line in-process; return stderr (it must exit with status 2)."""
    os.environ.pop(DEBUG_ENV, None)
    saved = Path.cwd()
    os.chdir(cwd)
    try:
        with pytest.raises(SystemExit) as stopped:
            main(args)
    finally:
        os.chdir(saved)
    err = capsys.readouterr().err
    assert stopped.value.code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("medllama-fusion: error:")]
    assert len(lines) == 1, err
    return err


def _common(files: dict[str, Path]) -> list[str]:
    return [
        "--config",
        str(CONF),
        "--data.init_args.source.init_args.root",
        str(files["root"]),
        "--trainer.default_root_dir",
        str(files["base"] / "again"),
    ]


ENTRY_POINTS = ["fit", "validate", "test", "predict", "explain", "export"]


@pytest.mark.parametrize("subcommand", ENTRY_POINTS)
@pytest.mark.parametrize("with_config", [True, False])
def test_a_checkpoint_that_carries_code_is_never_run(
    subcommand: str,
    with_config: bool,
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [subcommand, *(_common(files) if with_config else []), "--ckpt_path", str(files["evil"])]
    err = _run(args, files["base"], capsys)
    assert not files["marker"].exists(), "code from the checkpoint ran"
    assert str(files["evil"]) in err and "asks to run code" in err
    assert "`builtins.open`" in err or "`io.open`" in err  # the global it asked for
    assert "--weights_only false" in err


def test_the_pipeline_refuses_code_and_opens_it_only_when_trusted(files: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="asks to run code"):
        FusionPipeline.from_checkpoint(files["evil"], map_location="cpu")
    assert not files["marker"].exists()
    loaded = load_checkpoint(files["evil"], weights_only=False)  # the explicit opt-in runs it
    assert files["marker"].exists() and "extra" in loaded
    files["marker"].unlink()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("truncated", "is truncated or corrupt"), ("text", "is not a checkpoint file")],
)
@pytest.mark.parametrize("subcommand", ["test", "predict", "explain", "export"])
def test_broken_files_name_the_file(
    name: str,
    expected: str,
    subcommand: str,
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _run(
        [subcommand, *_common(files), "--ckpt_path", str(files[name])], files["base"], capsys
    )
    assert f"{files[name]} {expected}" in err
    with pytest.raises(InputError, match=expected):
        FusionPipeline.from_checkpoint(files[name])


def test_weights_of_another_lora_rank_name_the_setting(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "test",
        *_common(files),
        "--model.init_args.fusion.init_args.lora.r",
        "4",
        "--ckpt_path",
        str(files["notebook"]),
    ]
    err = _run(args, files["base"], capsys)
    assert "LoRA rank 2 in the checkpoint, 4 in the config (lora.r)" in err
    assert "shape differs: fusion." in err and "lora_A" in err


def test_a_checkpoint_of_other_labels_names_both_lists(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "test",
        *_common(files),
        "--data.init_args.source.init_args.layout",
        "raw",  # the raw reports' labels come from MeSH terms: any subset of the 14
        "--data.init_args.source.init_args.label_names",
        "[Cardiomegaly, Edema]",
        "--ckpt_path",
        str(files["good"]),
    ]
    err = _run(args, files["base"], capsys)
    assert "trained on 14 labels ['Atelectasis', 'Cardiomegaly'" in err
    assert "the data has 2 labels ['Cardiomegaly', 'Edema']" in err


def test_console_script_refuses_code_without_traceback(files: dict[str, Path]) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))
    env.pop(DEBUG_ENV, None)
    result = subprocess.run(
        [sys.executable, "-m", "medllama_fusion", "export", "--ckpt_path", str(files["evil"])],
        capture_output=True,
        text=True,
        env=env,
        cwd=files["base"],
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "asks to run code" in result.stderr
    assert not files["marker"].exists()


def test_a_legacy_pickle_checkpoint_is_opened_safely(tmp_path: Path) -> None:
    """torch's pre-zip format (a plain pickle) goes through the same refusal."""
    path = tmp_path / "legacy.ckpt"
    torch.save(
        {"state_dict": {"w": torch.ones(2)}, "extra": _RunsCode(tmp_path / "marker")},
        path,
        _use_new_zipfile_serialization=False,
    )
    with pytest.raises(InputError, match="asks to run code"):
        load_checkpoint(path)
    assert not (tmp_path / "marker").exists()

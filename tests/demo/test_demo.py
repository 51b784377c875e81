from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.classification import binary_auroc

from medllama_fusion.data.text import load_tokenizer
from medllama_fusion.datasets.labels import MONAI_COLUMN_NAMES, OPENI_LABELS
from medllama_fusion.datasets.nlm_reports import load_openi_reports, load_view_positions
from medllama_fusion.demo import main, make_demo_dataset
from medllama_fusion.demo.generator import demo_split_sizes


def file_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = file_bytes(make_demo_dataset(tmp_path / "a", n_reports=12, image_size=24, seed=5))
    b = file_bytes(make_demo_dataset(tmp_path / "b", n_reports=12, image_size=24, seed=5))
    c = file_bytes(make_demo_dataset(tmp_path / "c", n_reports=12, image_size=24, seed=6))
    assert a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)
    assert {"train.csv", "validation.csv", "test.csv", "nlmcxr_dicom_metadata.csv"} <= set(a)
    assert any(k.startswith("ecgen-radiology/") and k.endswith(".xml") for k in a)
    assert any(k.startswith("NLMCXR_png/") for k in a) and any(k.startswith("images/") for k in a)


def test_raw_and_csv_layouts_agree(tmp_path: Path) -> None:
    root = make_demo_dataset(tmp_path, n_reports=30, image_size=32, seed=1)
    reports, problems = load_openi_reports(root)
    assert problems == [] and len(reports) == 30
    views = load_view_positions(root / "nlmcxr_dicom_metadata.csv")
    rows = []
    for name in ("train.csv", "validation.csv", "test.csv"):
        with (root / name).open() as handle:
            rows += list(csv.DictReader(handle))
    assert len(rows) == 30
    by_id = {row["id"]: row for row in rows}
    for report in reports:
        frontal = [i for i in report.image_ids if views[i] in ("PA", "AP")]
        assert len(frontal) == 1 and all(
            views[i] == "LL" for i in report.image_ids if i not in frontal
        )
        row = by_id[f"{frontal[0]}.png"]  # the published MONAI form: id = image file name
        assert [int(row[MONAI_COLUMN_NAMES[n]]) for n in OPENI_LABELS] == report.labels
        assert row["report"].startswith("FINDINGS : ") and " IMPRESSION : " in row["report"]
        png = root / "NLMCXR_png" / f"{frontal[0]}.png"
        assert png.read_bytes() == (root / "images" / f"{frontal[0]}.png").read_bytes()
        with Image.open(png) as image:
            assert image.mode == "L" and image.size == (32, 32)
        assert sum(report.labels) >= 1  # No-Finding or a finding


def test_tokenizer_small_word_level_pad_zero(tmp_path: Path) -> None:
    root = make_demo_dataset(tmp_path, n_reports=20, image_size=16, seed=0, layout="csv")
    tokenizer = load_tokenizer(root / "tokenizer")
    assert tokenizer.pad_token_id == 0 and tokenizer.unk_token is not None
    assert len(tokenizer) <= 512
    ids = tokenizer("FINDINGS : No pleural effusion.")["input_ids"]
    assert tokenizer.unk_token_id not in ids and len(ids) == 6


def test_split_sizes_follow_paper_with_enough_validation() -> None:
    assert demo_split_sizes(600) == (468, 60, 72)
    train, val, test = demo_split_sizes(3)
    assert min(train, val, test) >= 1 and train + val + test == 3
    with pytest.raises(ValueError, match="n_reports"):
        make_demo_dataset("/nonexistent", n_reports=2)


def test_both_modalities_informative_but_imperfect(tmp_path: Path) -> None:
    root = make_demo_dataset(tmp_path, n_reports=300, image_size=32, seed=0, layout="csv")
    rows = []
    for name in ("train.csv", "validation.csv", "test.csv"):
        with (root / name).open() as handle:
            rows += list(csv.DictReader(handle))
    label = torch.tensor([int(r["Pleural-Effusion"]) for r in rows])
    text_says = torch.tensor(
        [
            float(
                "pleural effusion" in r["report"].lower()
                and "no pleural" not in r["report"].lower()
            )
            for r in rows
        ]
    )
    # image evidence: brightness at the lung bases
    bases = []
    for r in rows:
        pixels = np.asarray(Image.open(root / "images" / r["id"]), dtype=np.float32)
        bases.append((pixels[21:26, 6:12].mean() + pixels[21:26, 20:26].mean()) / 510.0)
    image_auroc = binary_auroc(torch.tensor(bases), label).item()  # scores in [0, 1]: no sigmoid
    text_accuracy = (text_says == label).float().mean().item()
    assert 0.7 < image_auroc < 0.999
    assert 0.85 < text_accuracy < 1.0


def test_cli_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--root", str(tmp_path / "d"), "--n-reports", "12", "--image-size", "16"])
    assert "12 reports" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "ecgen-radiology").glob("*.xml"))) == 12


def test_python_m_demo_runs_without_runpy_warning(tmp_path: Path) -> None:
    command = [sys.executable, "-W", "error::RuntimeWarning", "-m", "medllama_fusion.demo"]
    command += ["--root", str(tmp_path / "d"), "--n-reports", "6", "--image-size", "16"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "found in sys.modules" not in done.stderr
    assert len(list((tmp_path / "d" / "ecgen-radiology").glob("*.xml"))) == 6

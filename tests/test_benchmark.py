"""The speed benchmarks run end to end at tiny size on CPU (the GPU run uses the same code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark_loader import load_benchmark


@pytest.mark.slow
def test_train_speed_tiny(tmp_path: Path) -> None:
    bench = load_benchmark("train_speed")
    out = tmp_path / "speed.json"
    result = bench.main(
        [
            "--size",
            "tiny",
            "--variants",
            "parallel",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--image-size",
            "32",
            "--patch-size",
            "8",
            "--text-len",
            "16",
            "--batch-size",
            "4",
            "--backbone-layers",
            "12",
            "--workers",
            "0",
            "--qlora",
            "--qlora-blocks",
            "12",
            "--json",
            str(out),
        ]
    )
    rows = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert rows == {r["name"]: r for r in result["results"]}
    # parallel: 3 text + 3 vision + 3 bidirectional cross layers (2 blocks each) = 12 blocks.
    assert [r["blocks"] for r in result["results"]] == [12, 12, 12]
    library, bare, qlora = result["results"]
    assert library["name"].startswith("parallel") and bare["name"].startswith("bare")
    for row in (library, bare, qlora):
        assert row["samples_per_s"] > 0 and len(row["step_ms_all"]) == 2
        assert row["tflops_per_step"] > 0 and row["trainable_params"] > 0
    # The fusion model's blocks see 16 text or 16 image tokens; the bare stack sees all 32, so the
    # bare stack does more FLOPs per step.
    assert bare["tflops_per_step"] > library["tflops_per_step"]


def test_data_speed_tiny(tmp_path: Path) -> None:
    bench = load_benchmark("data_speed")
    out = tmp_path / "data.json"
    args = ["--count", "6", "--sizes", "60x48", "--workers", "0", "--repeats", "1"]
    result = bench.main([*args, "--data-dir", str(tmp_path / "files"), "--json", str(out)])
    assert json.loads(out.read_text()) == result
    size = result["sizes"]["60x48"]
    assert size["files"] == 6 and size["decoder"] in size["decoder_probe"]
    (row,) = size["workers"]
    for key in ("limit", "train_loader", "eval_loader"):
        assert row[key] > 0
    assert size["cache"]["epoch1"] > 0 and size["cache"]["epoch2"] > 0
    assert size["streaming"]["write"] > 0 and size["streaming"]["read"] > 0
    # the generated folder is a MONAI layout the library reads as such
    assert (tmp_path / "files" / "60x48_6" / "validation.csv").is_file()

from __future__ import annotations

from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medllama_fusion.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, n_reports=120, image_size=32, seed=0, layout="csv")
    return root


@pytest.fixture(scope="session")
def tiny_conf() -> Path:
    return CONF / "tiny.yaml"


def cli_args(subcommand: str, conf: Path, root: Path, out: Path, *extra: str) -> list[str]:
    return [
        subcommand,
        "--config",
        str(conf),
        "--data.init_args.source.init_args.root",
        str(root),
        "--trainer.default_root_dir",
        str(out),
        *extra,
    ]

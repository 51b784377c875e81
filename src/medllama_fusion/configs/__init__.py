"""YAML presets shipped with the package, and how a preset name becomes ``--config`` arguments.

``quickstart`` is one file. The nine paper presets ``paper/<fusion>_r<rank>`` (fusion
``parallel``, ``serial`` or ``mixed``; LoRA rank 2, 4 or 8) are composed from one recipe,
``paper/base.yaml``, and two small overlays, ``paper/fusion/<fusion>.yaml`` and
``paper/lora/r<rank>.yaml``; LightningCLI merges repeated ``--config`` arguments in order.
Adding an overlay file adds presets. A preset's runs are named after it (``--run_name``), so
``quickstart`` fits go to ``outputs/quickstart/version_<n>`` and ``paper/parallel_r2`` fits to
``outputs/paper/parallel_r2/version_<n>``.

``python -m medllama_fusion.configs`` lists the presets; ``python -m medllama_fusion.configs
NAME`` prints what follows ``--config`` for that preset, e.g. ``medllama-fusion fit --config
$(python -m medllama_fusion.configs quickstart)``. The command line also takes the names
directly (``--config quickstart``, ``--config paper/parallel_r2``).

This module imports nothing beyond the standard library, so listing presets is instant.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "CONFIG_DIR",
    "list_presets",
    "paper_fusions",
    "paper_ranks",
    "preset_arguments",
    "preset_files",
    "preset_path",
]

CONFIG_DIR = Path(__file__).resolve().parent
_PAPER = CONFIG_DIR / "paper"
_PAPER_NAME = re.compile(r"^paper/(?P<fusion>\w+?)_r(?P<rank>\d+)$")


def paper_fusions() -> list[str]:
    """Return the fusion overlays of the paper presets (``paper/fusion/*.yaml`` stems)."""
    return sorted(p.stem for p in (_PAPER / "fusion").glob("*.yaml"))


def paper_ranks() -> list[int]:
    """Return the LoRA ranks of the paper presets (from ``paper/lora/r<rank>.yaml``)."""
    return sorted(
        int(p.stem[1:]) for p in (_PAPER / "lora").glob("r*.yaml") if p.stem[1:].isdigit()
    )


def list_presets() -> list[str]:
    """Return the preset names: the single-file presets and every paper fusion x rank."""
    single = [p.stem for p in CONFIG_DIR.glob("*.yaml")]
    paper = [f"paper/{f}_r{r}" for f in paper_fusions() for r in paper_ranks()]
    return sorted(single + paper)


def _paper_parts(name: str) -> tuple[str, int] | None:
    match = _PAPER_NAME.match(name)
    if match is None:
        return None
    fusion, rank = match.group("fusion"), int(match.group("rank"))
    if fusion not in paper_fusions() or rank not in paper_ranks():
        return None
    return fusion, rank


def _unknown(name: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"no preset named {name!r}; choose one of {list_presets()} or pass your own YAML path."
    )


def preset_files(name: str) -> list[Path]:
    """Return the YAML files of preset ``name``, in the order they are merged.

    Besides the listed presets, any YAML file below the config folder is found by its relative
    name without ``.yaml`` (e.g. ``"paper/lora/r4"``, to use as an extra overlay).

    Raises:
        FileNotFoundError: When no such preset exists; the message lists the available ones.
    """
    name = name.removesuffix(".yaml")
    parts = _paper_parts(name)
    if parts is not None:
        fusion, rank = parts
        return [
            _PAPER / "base.yaml",
            _PAPER / "fusion" / f"{fusion}.yaml",
            _PAPER / "lora" / f"r{rank}.yaml",
        ]
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise _unknown(name)
    return [path]


def preset_arguments(name: str) -> list[str]:
    """Return the command-line arguments that stand for ``--config NAME``.

    Args:
        name: A preset name such as ``"quickstart"`` or ``"paper/parallel_r2"``.

    Returns:
        ``["--config", <file>, ...]`` for each file of the preset, then ``--run_name NAME``.

    Raises:
        FileNotFoundError: When no such preset exists.
    """
    name = name.removesuffix(".yaml")
    args: list[str] = []
    for path in preset_files(name):
        args += ["--config", str(path)]
    return [*args, "--run_name", name]


def preset_path(name: str) -> Path:
    """Return the file of a single-file preset (e.g. ``"quickstart"``).

    Raises:
        FileNotFoundError: When no such preset exists, or when the preset is composed of several
            files (a paper preset); use :func:`preset_files` or :func:`preset_arguments` then.
    """
    files = preset_files(name)
    if len(files) != 1:
        raise FileNotFoundError(
            f"preset {name!r} is composed of {len(files)} files ({', '.join(map(str, files))}); "
            "pass its name to --config, or use preset_arguments()."
        )
    return files[0]


def _cli(argv: list[str]) -> int:
    if not argv:
        for name in list_presets():
            print(f"{name}: {' + '.join(str(p) for p in preset_files(name))}")
        return 0
    print(" ".join(preset_arguments(argv[0])[1:]))
    return 0

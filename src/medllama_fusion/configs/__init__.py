"""YAML presets shipped with the package, and a lookup for their paths.

``python -m medllama_fusion.configs`` lists the presets; ``python -m medllama_fusion.configs
quickstart`` prints one path, e.g. ``medllama-fusion fit --config $(python -m
medllama_fusion.configs quickstart)``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIR", "list_presets", "preset_path"]

CONFIG_DIR = Path(__file__).resolve().parent


def list_presets() -> list[str]:
    """Return the preset names (paths below the config folder without ``.yaml``)."""
    files = CONFIG_DIR.rglob("*.yaml")
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in files)


def preset_path(name: str) -> Path:
    """Return the file of preset ``name`` (e.g. ``"quickstart"`` or ``"paper/parallel_r2"``).

    Raises:
        FileNotFoundError: When no such preset exists; the message lists the available ones.
    """
    path = CONFIG_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no preset named {name!r}; choose one of {list_presets()} or pass your own YAML path."
        )
    return path


def _cli(argv: list[str]) -> int:
    if not argv:
        print("\n".join(f"{n}: {preset_path(n)}" for n in list_presets()))
        return 0
    print(preset_path(argv[0]))
    return 0


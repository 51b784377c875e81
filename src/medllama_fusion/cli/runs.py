"""Run folders: each ``fit`` writes into its own folder, and ``--ckpt_path last`` finds one.

Layout (``<root>`` is ``trainer.default_root_dir``, ``<name>`` is ``--run_name``: the preset's
name, else the config file's stem, else ``run``)::

    <root>/<name>/version_0/            one fit: config.yaml, checkpoints/, metrics
    <root>/<name>/version_0/checkpoints/last.ckpt
    <root>/<name>/version_1/            the next fit (never the folder of another)
    <root>/<name>/test/version_0/       a test (validate, predict, explain: the same)

``--ckpt_path last`` means the last checkpoint of one run: by default the newest run under
``<root>/<name>`` whose stored configuration has the same model and data settings
(:data:`COMPARED_KEYS`) as this command's; ``--run <folder>`` names another run. When no run
matches, :class:`RunNotFoundError` names the newest run, how its settings differ and how to
choose. ``fit --ckpt_path last`` resumes that run in its own folder.
"""

from __future__ import annotations

import pydoc
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from medllama_fusion.errors import InputError

__all__ = [
    "COMPARED_KEYS",
    "CONFIG_FILE",
    "Config",
    "Run",
    "RunNotFoundError",
    "config_differences",
    "find_runs",
    "latest_matching_run",
    "lookup",
    "run_checkpoint",
    "run_name",
    "runs_folder",
]

CONFIG_FILE = "config.yaml"
"""The configuration a run ran with, in its folder (written by LightningCLI)."""
COMPARED_KEYS: tuple[str, ...] = (
    "model",
    "data.class_path",
    "data.init_args.source",
    "data.init_args.preprocessing",
    "data.init_args.split",
    "data.init_args.input_dir",
)
"""The settings that define a run's model and data (loader and curation settings do not)."""
_VERSION = re.compile(r"^version_(\d+)$")


class Config(Protocol):
    """A command's configuration: a mapping or a jsonargparse ``Namespace``."""

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, else ``default``."""


class RunNotFoundError(InputError):
    """``--ckpt_path last`` found no run of this configuration."""


@dataclass(frozen=True)
class Run:
    """One fit's folder.

    Attributes:
        folder: The run folder (``<root>/<name>/version_<n>``).
        version: Its version number.
        config: Its stored configuration (the subcommand's section).
    """

    folder: Path
    version: int
    config: dict[str, Any]


def run_name(config: Config) -> str:
    """A command's run name: ``--run_name``, else the last ``--config`` file's stem, else ``run``.

    Args:
        config: The command's configuration (its subcommand section).

    Returns:
        The name.
    """
    if config.get("run_name"):
        return str(config.get("run_name"))
    files = [f for f in (config.get("config") or []) if f is not None]
    return Path(str(files[-1])).stem if files else "run"


def runs_folder(config: Config) -> Path:
    """``<trainer.default_root_dir>/<run name>``: where a command's runs go.

    Args:
        config: The command's configuration (its subcommand section).

    Returns:
        The folder.
    """
    trainer = config.get("trainer") or {}
    return Path(trainer.get("default_root_dir") or ".") / run_name(config)


def _canonical_class(path: Any) -> Any:
    """A ``class_path`` as its defining module's path (short names and re-exports agree)."""
    if not isinstance(path, str):
        return path
    found = pydoc.locate(path)
    return f"{found.__module__}.{found.__qualname__}" if isinstance(found, type) else path


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists and scalars are leaves)."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if prefix.endswith("class_path"):
        return {prefix: _canonical_class(value)}
    return {prefix: value}


def lookup(config: Any, dotted: str) -> Any:
    """The value at ``dotted`` (``"data.init_args.source"``) of a mapping or Namespace, or None.

    Args:
        config: A configuration (nested mappings or jsonargparse ``Namespace`` s).
        dotted: The key path.

    Returns:
        The value, or ``None`` when a part is missing.
    """
    value: Any = config
    for part in dotted.split("."):
        if not hasattr(value, "__getitem__") or isinstance(value, str) or part not in value:
            return None
        value = value[part]
    return value


def config_differences(
    stored: Mapping[str, Any],
    current: Mapping[str, Any],
    ignore: Collection[str] = (),
    names: tuple[str, str] = ("in the run", "here"),
) -> list[str]:
    """The compared settings (:data:`COMPARED_KEYS`) whose values differ.

    Args:
        stored: A run's configuration.
        current: This command's configuration.
        ignore: Settings not to compare (those the command line links from others).
        names: How the two sides are named in the lines.

    Returns:
        ``"key: <stored> <names[0]>, <current> <names[1]>"`` lines, sorted.
    """
    lines: list[str] = []
    for key in COMPARED_KEYS:
        old = _flatten(lookup(stored, key), key)
        new = _flatten(lookup(current, key), key)
        for name in sorted(set(old) | set(new)):
            if name in ignore:
                continue
            if old.get(name) != new.get(name):
                lines.append(f"{name}: {old.get(name)!r} {names[0]}, {new.get(name)!r} {names[1]}")
    return lines


def _load_config(folder: Path) -> dict[str, Any] | None:
    path = folder / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    return loaded if isinstance(loaded, dict) else None


def find_runs(parent: str | Path) -> list[Run]:
    """The fit runs under ``parent`` (``version_<n>`` folders with a config), newest first.

    Args:
        parent: ``<root>/<name>``.

    Returns:
        The runs, by descending version.
    """
    folder = Path(parent)
    if not folder.is_dir():
        return []
    runs: list[Run] = []
    for child in folder.iterdir():
        match = _VERSION.match(child.name)
        config = _load_config(child) if match and child.is_dir() else None
        if match and config is not None and (child / "checkpoints").is_dir():
            runs.append(Run(child, int(match.group(1)), config))
    return sorted(runs, key=lambda run: run.version, reverse=True)


def run_checkpoint(run: Path) -> Path | None:
    """The last checkpoint of a run: ``checkpoints/last.ckpt``, else the newest ``.ckpt``.

    Args:
        run: The run folder.

    Returns:
        The checkpoint, or ``None`` when the run has none yet.
    """
    folder = Path(run) / "checkpoints"
    last = folder / "last.ckpt"
    if last.is_file():
        return last
    found = (
        sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns) if folder.is_dir() else []
    )
    return found[-1] if found else None


def latest_matching_run(
    parent: str | Path, current: Mapping[str, Any], ignore: Collection[str] = ()
) -> Run | None:
    """The newest run under ``parent`` with this configuration's model and data settings.

    Args:
        parent: ``<root>/<name>``.
        current: This command's configuration.
        ignore: Settings not to compare (see :func:`config_differences`).

    Returns:
        The run, or ``None`` when ``parent`` holds no run at all.

    Raises:
        RunNotFoundError: When runs exist but none has these settings (the message names the
            newest, the differences, and how to choose).
    """
    runs = [run for run in find_runs(parent) if run_checkpoint(run.folder) is not None]
    if not runs:
        return None
    for run in runs:
        if not config_differences(run.config, current, ignore):
            return run
    newest = runs[0]
    differences = config_differences(newest.config, current, ignore)
    shown = "\n  ".join(differences[:10])
    more = f"\n  ... ({len(differences) - 10} more)" if len(differences) > 10 else ""
    raise RunNotFoundError(
        f"--ckpt_path last: no run under {parent} has this configuration. The newest run, "
        f"{newest.folder}, differs in:\n  {shown}{more}\n"
        f"Pass --run {newest.folder} to use it anyway, --ckpt_path <file> for a checkpoint, or "
        "change the settings to those of the run you mean."
    )

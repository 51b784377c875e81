"""Command-line interface: ``medllama-fusion <subcommand>`` (fit, validate, test, predict, ...).

One :class:`~lightning.pytorch.cli.LightningCLI` subclass parses every subcommand, so
``--config <preset or file>``, ``--ckpt_path last``, ``--print_config`` and ``--help`` behave
the same in all eight. Models and data modules are selected by ``class_path`` (short names such
as ``FusionClassifier``, ``ParallelFusion``, ``FusionDataModule`` and ``OpenIDataset`` resolve
once :mod:`medllama_fusion` is imported; your own classes by dotted path). Links:

- the data's label names → ``model.init_args.label_names``,
- the data's ``preprocessing.image_size`` → the fusion model's ``vision.image_size``,
- ``model.init_args.compile`` → ``data.init_args.model_compiles`` (fixed padding lengths),
- the backbone's ``pretrained`` source → ``preprocessing.tokenizer`` when that is unset.

Each ``fit`` gets its own run folder and ``--ckpt_path last`` means the last checkpoint of the
newest run of the same configuration (:mod:`medllama_fusion.cli.runs`). A checkpoint is opened
without running code from it (:mod:`medllama_fusion.inference.checkpoints`), and its
preprocessing record replaces the configuration's for every subcommand but ``fit``. The console
entry point :func:`main` prints an :class:`~medllama_fusion.errors.InputError` (or a
:class:`FileNotFoundError`) as one line-prefixed message and exits with status 2;
``MEDLLAMA_FUSION_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pydoc
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from medllama_fusion._quiet import install_evaluation_filters
from medllama_fusion.cli.runs import (
    config_differences,
    latest_matching_run,
    lookup,
    run_checkpoint,
    run_name,
    runs_folder,
)
from medllama_fusion.cli.threads import NUM_THREADS_ENV, apply_thread_policy, parse_thread_setting
from medllama_fusion.cli.trainer import FusionTrainer
from medllama_fusion.configs import list_presets, preset_arguments
from medllama_fusion.data.preprocessing import PREPROCESSING_KEY, Preprocessing
from medllama_fusion.errors import InputError
from medllama_fusion.extras import require
from medllama_fusion.inference.checkpoints import load_checkpoint
from medllama_fusion.trainers.callbacks import (
    RUN_CONFIG_KEY,
    PredictionCSVWriter,
    RunConfigInCheckpoint,
)
from medllama_fusion.trainers.operating_points import OperatingPoints

__all__ = [
    "DEBUG_ENV",
    "NUM_THREADS_ENV",
    "FusionCLI",
    "cli_main",
    "main",
    "resolve_preset_configs",
    "set_num_threads_from_env",
    "user_error_message",
]

PROG = "medllama-fusion"
DEBUG_ENV = "MEDLLAMA_FUSION_DEBUG"
"""Environment variable: set to ``1`` to see the traceback of an input error."""
RUN_VERSION_ENV = "MEDLLAMA_FUSION_RUN_VERSION"
"""Set by the first process of a run so that the processes it launches write to its folder."""
_USER_ERRORS: tuple[type[BaseException], ...] = (InputError, FileNotFoundError)
_SUBCOMMAND_EXTRAS: dict[str, str] = {"explain": "explain", "optimize": "streaming"}
"""Subcommands that need an extra: checked right after parsing, before any file is opened."""


def _image_size(preprocessing: Preprocessing) -> int:
    return preprocessing.image_size


LINK_TARGETS: tuple[str, ...] = (
    "model.init_args.label_names",
    "model.init_args.fusion.init_args.vision.image_size",
    "data.init_args.model_compiles",
)
"""Settings the command line sets from others (see :meth:`FusionCLI.add_arguments_to_parser`)."""


def _plain(namespace: Any) -> Any:
    """A jsonargparse Namespace (tree) as plain dicts."""
    if isinstance(namespace, Namespace):
        return {k: _plain(v) for k, v in vars(namespace).items()}
    if isinstance(namespace, dict):
        return {k: _plain(v) for k, v in namespace.items()}
    if isinstance(namespace, (list, tuple)):
        return [_plain(v) for v in namespace]
    return namespace


class FusionCLI(LightningCLI):
    """LightningCLI with the library's subcommands, links, run folders and safe checkpoints.

    See the module docstring. Every subcommand prints the folders it wrote to.
    """

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's four subcommands plus ``audit``, ``explain``, ``export``, ``optimize``."""
        extra = {"model", "datamodule"}
        return {
            **LightningCLI.subcommands(),
            "audit": set(extra),
            "explain": set(extra),
            "export": set(extra),
            "optimize": set(extra),
        }

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the links, ``--operating_points``, ``--num_threads``, ``--run_name``, ``--run``."""
        labels, image_size, compiles = LINK_TARGETS
        parser.link_arguments("data.label_names", labels, apply_on="instantiate")
        parser.link_arguments(
            "data.preprocessing", image_size, compute_fn=_image_size, apply_on="instantiate"
        )
        parser.link_arguments("model.init_args.compile", compiles, apply_on="parse")
        parser.add_lightning_class_args(OperatingPoints, "operating_points")
        parser.add_argument(
            "--num_threads",
            type=int | Literal["auto"],
            default="auto",
            help="CPU threads of torch's intra-op pool: 'auto' (one for small models on the CPU, "
            "see medllama_fusion.cli.threads) or a number; MEDLLAMA_FUSION_NUM_THREADS overrides.",
        )
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Name of the run folders, <trainer.default_root_dir>/<run_name>/version_<n> "
            "(default: the preset's name, else the config file's stem, else 'run').",
        )
        parser.add_argument(
            "--run",
            type=str | None,
            default=None,
            help="A run folder whose last checkpoint --ckpt_path last means (default: the "
            "newest run of this configuration).",
        )

    # ------------------------------------------------------------------ parsing
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then resolve ``--ckpt_path last``, open the checkpoint and apply its record."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        self.resume_version: int | None = None
        if subcommand is None:
            return
        if subcommand in _SUBCOMMAND_EXTRAS:
            require(_SUBCOMMAND_EXTRAS[subcommand], subcommand)
        config = self.config[subcommand]
        _tokenizer_from_backbone(config)
        ckpt = self._resolve_last(subcommand, config)
        if not ckpt:
            return
        weights_only = config.get("weights_only") is not False
        raw = load_checkpoint(ckpt, weights_only=weights_only)
        if subcommand != "fit":
            _apply_record(config, raw, ckpt)
        hparams = raw.get("hyper_parameters") or {}
        _notice_model_settings(config, hparams)
        if not weights_only or "_class_path" not in hparams:
            # LightningCLI reads a checkpoint's hyperparameters itself, with weights_only=True
            # and only in the form its own runs write; here they are applied (or, for a model
            # trained in Python, left to the configuration) in before_instantiate_classes.
            self._deferred = (ckpt, hparams)
            config.ckpt_path = None

    def before_instantiate_classes(self) -> None:
        """Give a deferred checkpoint (see :meth:`parse_arguments`) its path and hparams back."""
        deferred = getattr(self, "_deferred", None)
        if deferred is None:
            return
        path, stored = deferred
        hparams = dict(stored)
        hparams.pop("_instantiator", None)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
            self.config = self.parser.parse_object(
                {str(self.subcommand): {"model": hparams}}, self.config
            )
        self.config[str(self.subcommand)].ckpt_path = path

    def _resolve_last(self, subcommand: str, config: Namespace) -> str | None:
        """Turn ``--ckpt_path last`` / ``--run`` into a file (see :mod:`.runs`)."""
        ckpt = config.get("ckpt_path")
        run = config.get("run")
        if run and ckpt not in (None, "last"):
            raise InputError(
                f"--run {run} and --ckpt_path {ckpt} both name a checkpoint; pass --run with "
                "--ckpt_path last (the run's last checkpoint), or --ckpt_path <file> alone."
            )
        if ckpt != "last" and not run:
            if ckpt and Path(ckpt).parent.name == "checkpoints":
                folder = Path(ckpt).parent.parent  # a run's own checkpoint: resume in its folder
                if folder.parent.resolve() == runs_folder(config).resolve():
                    self._set_resume(subcommand, folder)
            return str(ckpt) if ckpt else None
        if run:
            path = run_checkpoint(Path(run))
            if path is None:
                raise InputError(f"--run {run} holds no checkpoint (no {run}/checkpoints/*.ckpt).")
            config.ckpt_path = str(path)
            self._set_resume(subcommand, Path(run))
            return str(path)
        root = runs_folder(config)
        current = _plain(config)
        found = latest_matching_run(root, current, LINK_TARGETS)
        if found is None:
            if subcommand == "fit":
                print(f"{PROG}: no earlier run under {root}: starting a new run.", flush=True)
                config.ckpt_path = None
                return None
            raise InputError(
                f"--ckpt_path last: there is no run under {root} yet; run `fit` with this "
                "configuration first, or pass --ckpt_path <file>."
            )
        path = run_checkpoint(found.folder)
        assert path is not None
        config.ckpt_path = str(path)
        self._set_resume(subcommand, found.folder)
        print(f"{PROG}: --ckpt_path last is {path}", flush=True)
        return str(path)

    def _set_resume(self, subcommand: str, folder: Path) -> None:
        """``fit`` continues the run in its own folder."""
        if subcommand == "fit":
            match = re.match(r"^version_(\d+)$", folder.name)
            self.resume_version = int(match.group(1)) if match else None

    def instantiate_classes(self) -> None:
        """Build the model, data module and trainer (``optimize`` builds no model)."""
        if self.subcommand != "optimize":
            super().instantiate_classes()
            return
        config = self.config["optimize"]
        parser = LightningArgumentParser(exit_on_error=False)
        parser.add_lightning_class_args(LightningDataModule, "data", subclass_mode=True)
        data = parser.instantiate_classes(parser.parse_object({"data": config.data.as_dict()}))
        self.config_init = self.config  # the subcommand's own arguments are plain values
        self.datamodule = data.data
        self.model = None  # type: ignore[assignment]
        self.trainer = FusionTrainer(logger=False, enable_checkpointing=False)

    # ------------------------------------------------------------------ the trainer
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Build the trainer: the run folder logger, ``last.ckpt``, threads, stored config."""
        subcommand = str(self.subcommand)
        config = self.config.get(subcommand, self.config)
        trainer_config = config.get("trainer") or {}
        if "logger" not in kwargs and trainer_config.get("logger") in (None, True):
            kwargs["logger"] = self._run_logger(subcommand, config)
        if subcommand != "fit":
            install_evaluation_filters()
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last is None:
                callback.save_last = True  # every run has <run>/checkpoints/last.ckpt
        apply_thread_policy(
            config.get("num_threads", "auto"),
            on_cpu=isinstance(trainer.accelerator, CPUAccelerator),
            model=self.model,
            data_workers=int(getattr(getattr(self.datamodule, "loader", None), "num_workers", 0)),
        )
        text = self._parser(subcommand).dump(config, skip_none=False, skip_validation=True)
        trainer.callbacks.append(RunConfigInCheckpoint(text, os.getcwd()))  # type: ignore[attr-defined]
        return trainer

    def _run_logger(self, subcommand: str, config: Namespace) -> Logger:
        """Lightning's default logger, writing to this subcommand's run folder."""
        root = config.trainer.get("default_root_dir") or os.getcwd()
        name = run_name(config)
        if subcommand != "fit":
            name = f"{name}/{subcommand}"
        version: int | None = self.resume_version if subcommand == "fit" else None
        inherited = os.environ.get(RUN_VERSION_ENV)
        if version is None and inherited is not None and "LOCAL_RANK" in os.environ:
            version = int(inherited)  # a process this run launched: the same folder
        if version is None:
            version = _next_version(Path(root) / name)
            os.environ[RUN_VERSION_ENV] = str(version)
        tensorboard = any(importlib.util.find_spec(n) for n in ("tensorboard", "tensorboardX"))
        logger_class = TensorBoardLogger if tensorboard else CSVLogger  # Lightning's own choice
        return logger_class(save_dir=root, name=name, version=version)

    # ------------------------------------------------------------------ output
    def before_fit(self) -> None:
        """Print the run folder."""
        if self.trainer.is_global_zero and self.trainer.log_dir:
            print(f"{PROG}: run folder {_shown(self.trainer.log_dir)}", flush=True)

    def after_fit(self) -> None:
        """Print the run folder, the best and the last checkpoint."""
        trainer = self.trainer
        log_dir = trainer.log_dir or trainer.default_root_dir  # collective: every rank asks
        if not trainer.is_global_zero:
            return
        print(f"{PROG}: run folder {_shown(log_dir)}", flush=True)
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            if callback.best_model_path:
                print(f"{PROG}: best checkpoint {_shown(callback.best_model_path)}", flush=True)
            if callback.last_model_path:
                print(f"{PROG}: last checkpoint {_shown(callback.last_model_path)}", flush=True)

    def _print_results(self) -> None:
        trainer = self.trainer
        log_dir = trainer.log_dir or trainer.default_root_dir  # collective: every rank asks
        if not trainer.is_global_zero:
            return
        report_dir = getattr(self.model, "hparams", {}).get("report_dir")
        if report_dir:
            print(f"{PROG}: results in {_shown(str(report_dir))}", flush=True)
        print(f"{PROG}: logs and results in {_shown(log_dir)}", flush=True)

    def after_validate(self) -> None:
        """Print the folder of the logs."""
        self._print_results()

    def after_test(self) -> None:
        """Print the folder of the test tables, ROC plot and logs."""
        self._print_results()

    def after_predict(self) -> None:
        """Print the log folder (the prediction writer prints its own file)."""
        self._print_results()


SUBCOMMANDS: tuple[str, ...] = tuple(FusionCLI.subcommands())
"""The subcommands LightningCLI parses (``compare`` reads files only and has its own parser)."""


def _next_version(folder: Path) -> int:
    """One more than the highest ``version_<n>`` in ``folder`` that holds anything (0 for none).

    A run that stopped before writing anything (an input error at setup) leaves an empty
    folder; the next run takes its number.
    """
    if not folder.is_dir():
        return 0
    numbers = [
        int(match.group(1))
        for child in folder.iterdir()
        if (match := re.match(r"^version_(\d+)$", child.name)) and any(child.iterdir())
    ]
    return max(numbers, default=-1) + 1


def _tokenizer_from_backbone(config: Namespace) -> None:
    """Fill ``preprocessing.tokenizer`` from the backbone's ``pretrained`` when it is unset."""
    preprocessing = lookup(config, "data.init_args.preprocessing")
    backbone = lookup(config, "model.init_args.fusion.init_args.backbone")
    if not isinstance(preprocessing, Namespace) or preprocessing.get("tokenizer"):
        return
    pretrained = backbone.get("pretrained") if isinstance(backbone, Namespace) else None
    if not pretrained:
        return
    gguf = backbone.get("gguf_file")
    preprocessing.tokenizer = str(Path(pretrained) / gguf) if gguf else str(pretrained)


def _notice_model_settings(config: Namespace, hparams: Mapping[str, Any]) -> None:
    """Say which model settings of the configuration the checkpoint's replace.

    A checkpoint rebuilds its own model from the settings stored in it (as LightningCLI does).
    """
    stored = {k: v for k, v in hparams.items() if not k.startswith("_")}
    given = _plain(lookup(config, "model.init_args")) or {}
    changed = [
        line.removeprefix("model.init_args.")
        for line in config_differences(
            {"model": {"init_args": stored}},
            {"model": {"init_args": given}},
            ignore=LINK_TARGETS,
            names=("in the checkpoint", "in the configuration"),
        )
        if line.split(":", 1)[0] in {f"model.init_args.{k}" for k in _flat_keys(stored)}
    ]
    if stored and changed:
        more = f"; ... ({len(changed) - 5} more)" if len(changed) > 5 else ""
        shown = "; ".join(changed[:5]) + more
        print(
            f"{PROG}: the checkpoint's model settings replace the configuration's: {shown}",
            flush=True,
        )


def _flat_keys(value: Any, prefix: str = "") -> list[str]:
    """The dotted keys of a nested mapping's leaves."""
    if not isinstance(value, Mapping) or not value:
        return [prefix]
    return [
        key
        for name, item in value.items()
        for key in _flat_keys(item, f"{prefix}.{name}" if prefix else str(name))
    ]


def _apply_record(config: Namespace, checkpoint: Mapping[str, Any], path: str) -> None:
    """Use the checkpoint's preprocessing record instead of the configuration's, with a notice."""
    preprocessing = lookup(config, "data.init_args.preprocessing")
    stored = checkpoint.get(PREPROCESSING_KEY)
    if not isinstance(preprocessing, Namespace) or not isinstance(stored, Mapping):
        return
    record = Preprocessing.from_dict(stored, source=path)
    changed: list[str] = []
    for name, value in record.to_dict().items():
        if name not in preprocessing:
            continue  # derived fields (label names, pad id)
        given = preprocessing.get(name)
        plain = list(given) if isinstance(given, tuple) else given
        if given is not None and plain != value and name != "tokenizer":
            changed.append(f"{name}={value!r} (config: {plain!r})")
        preprocessing[name] = value
    if changed:
        print(
            f"{PROG}: using the preprocessing the checkpoint was trained with: "
            + ", ".join(changed),
            flush=True,
        )


def _shown(path: str) -> str:
    """Return a local path made absolute (remote URLs unchanged), for messages."""
    return path if "://" in path else str(Path(path).resolve())


def resolve_preset_configs(argv: list[str]) -> list[str]:
    """Replace ``--config NAME`` by the shipped preset's arguments when NAME is not a file.

    ``medllama-fusion fit --config quickstart`` then runs the packaged quickstart preset and
    ``--config paper/parallel_r2`` a paper preset, which stands for several ``--config`` files
    and its run name (see :func:`~medllama_fusion.configs.preset_arguments`); existing files are
    passed through unchanged. An explicit ``--run_name`` wins over the preset's.

    Args:
        argv: Command-line arguments without the program name.

    Returns:
        The arguments with preset names replaced by their arguments.
    """
    presets = set(list_presets())
    named = any(arg == "--run_name" or arg.startswith("--run_name=") for arg in argv)

    def is_preset(value: str) -> bool:
        # names first: a configuration given inline can be too long to be asked for as a path
        return value.removesuffix(".yaml") in presets and not Path(value).exists()

    def expand(name: str) -> list[str]:
        expanded = preset_arguments(name)
        if named:
            cut = expanded.index("--run_name") if "--run_name" in expanded else len(expanded)
            expanded = expanded[:cut]
        return expanded

    out: list[str] = []
    expect_value = False
    for arg in argv:
        if expect_value and is_preset(arg):
            out[-1:] = expand(arg)
        elif arg.startswith("--config=") and is_preset(arg.split("=", 1)[1]):
            expanded = expand(arg.split("=", 1)[1])
            out += [
                f"{flag}={value}" for flag, value in zip(expanded[::2], expanded[1::2], strict=True)
            ]
        else:
            out.append(arg)
        expect_value = arg in ("--config", "-c")
    return out


SWITCHES: tuple[str, ...] = ("--audit",)
"""Boolean options that may be given bare: ``test --audit`` means ``test --audit true``."""


def _switches(argv: list[str]) -> list[str]:
    """Give a bare :data:`SWITCHES` option its ``true`` (jsonargparse wants a value)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else None
        bare = following is None or following.startswith("-")
        out.append(f"{arg}=true" if arg in SWITCHES and bare else arg)
    return out


def _stored_config(argv: list[str]) -> list[str]:
    """Without ``--config``, use the configuration stored in ``--ckpt_path``'s checkpoint.

    ``medllama-fusion test --ckpt_path RUN/checkpoints/last.ckpt`` then rebuilds the run's
    model and data like ``--config RUN/config.yaml`` would; the checkpoint is opened without
    running code from it.
    """
    if (
        len(argv) < 2
        or argv[0] not in SUBCOMMANDS
        or any(a in ("--config", "-c") or a.startswith("--config=") for a in argv)
    ):
        return argv
    ckpt = None
    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            ckpt = argv[i + 1]
        elif arg.startswith("--ckpt_path="):
            ckpt = arg.split("=", 1)[1]
    if not ckpt or ckpt == "last" or not Path(ckpt).is_file():
        return argv
    trusted = "--weights_only=false" in [a.lower() for a in argv] or any(
        a == "--weights_only" and argv[i + 1].lower() == "false" for i, a in enumerate(argv[:-1])
    )
    stored = load_checkpoint(ckpt, weights_only=not trusted).get(RUN_CONFIG_KEY)
    text = stored.get("yaml") if isinstance(stored, Mapping) else None
    if not text:
        raise InputError(
            f"{ckpt} holds no run configuration; pass --config with the configuration it was "
            "trained with."
        )
    config = yaml.safe_load(text) or {}
    for key in ("ckpt_path", "weights_only", "run"):
        config.pop(key, None)
    return [argv[0], "--config", yaml.safe_dump(config), *argv[1:]]


def _null_overrides(argv: list[str]) -> list[str]:
    """Pass ``--a.b.c null`` as the configuration ``{a: {b: {c: null}}}`` at the same place.

    jsonargparse (4.53) re-reads a value given to a field nested in a class's arguments as the
    text of the parsed value, so ``null`` arrives there as the string ``'None'``; a configuration
    carries the null itself, and a later option still overrides it.
    """
    if not argv or argv[0] not in SUBCOMMANDS:
        return argv
    out = argv[:1]
    i = 1
    while i < len(argv):
        arg = argv[i]
        key, value, step = arg, None, 1
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
        elif arg.startswith("--") and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        dotted = key.startswith("--") and "." in key and not key.endswith("+")
        if dotted and value is not None and value.strip() and yaml.safe_load(value) is None:
            config: Any = None
            for part in reversed(key[2:].split(".")):
                config = {part: config}
            out += ["--config", json.dumps(config)]
        else:
            out += argv[i : i + step]
        i += step
    return out


def _prepared(argv: list[str]) -> list[str]:
    """The command line as LightningCLI gets it: switches, presets, stored config, nulls."""
    return _null_overrides(_stored_config(resolve_preset_configs(_switches(argv))))


@contextmanager
def _command_line(argv: list[str]) -> Iterator[None]:
    """Let ``sys.argv[1:]`` be ``argv`` for the duration (restored afterwards)."""
    saved = sys.argv[:]
    sys.argv[1:] = argv
    try:
        yield
    finally:
        sys.argv[:] = saved


def _register_classes() -> None:
    """Import the model, data and training classes so their short names resolve in configs."""
    import medllama_fusion.datamodules
    import medllama_fusion.datasets
    import medllama_fusion.demo
    import medllama_fusion.models
    import medllama_fusion.trainers  # noqa: F401  (register the LightningModule subclasses)


def _names_a_subcommand(args: ArgsType) -> bool:
    """Whether ``args`` (a list) names a subcommand; dicts and namespaces always count."""
    if not isinstance(args, list):
        return True
    return any(arg in SUBCOMMANDS for arg in args)


def set_num_threads_from_env() -> int | None:
    """Apply a numeric ``MEDLLAMA_FUSION_NUM_THREADS`` before the model is built.

    The run's thread policy (:mod:`medllama_fusion.cli.threads`) is applied again once the model
    and trainer exist; a number in the variable fixes the count for both.

    Returns:
        The number of threads set, or ``None`` when the variable is unset, empty or ``auto``.

    Raises:
        InputError: When the value is not a positive integer.
    """
    value = os.environ.get(NUM_THREADS_ENV, "").strip()
    if not value:
        return None
    setting = parse_thread_setting(value, NUM_THREADS_ENV)
    if setting == "auto":
        return None  # decided once the model is built (see medllama_fusion.cli.threads)
    import torch

    torch.set_num_threads(setting)
    return setting


def cli_main(args: ArgsType = None) -> FusionCLI:
    """Build and run the command-line interface and return it (for tests and notebooks).

    Errors propagate unchanged (:func:`main` turns input errors into messages). The model and
    data classes (and torch, transformers, peft with them) are imported only when a subcommand is
    given, so ``--help`` of the program itself starts quickly.

    Args:
        args: Command-line arguments (list of strings, dict or Namespace); ``sys.argv`` if None.

    Returns:
        The :class:`FusionCLI` instance with ``model``, ``datamodule`` and ``trainer``.
    """

    def build(cli_args: ArgsType) -> FusionCLI:
        if _names_a_subcommand(sys.argv[1:] if cli_args is None else cli_args):
            _register_classes()
            set_num_threads_from_env()
        return FusionCLI(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            trainer_class=FusionTrainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [PredictionCSVWriter()]},
            args=cli_args,
        )

    owned = RUN_VERSION_ENV not in os.environ
    group_was_open = _process_group_open()
    try:
        if args is None:  # read sys.argv ourselves: passing it as args makes LightningCLI warn
            argv = _prepared(sys.argv[1:])
            with _command_line(argv):
                return build(None)
        if isinstance(args, list):
            # sys.argv stays as it is: a DDP launcher starts the other processes from it (the
            # same script, which passes the same list). LightningCLI's warning about getting
            # both is about exactly this use, so it is not shown.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_BOTH_ARGS_WARNING)
                return build(_prepared(args))
        return build(args)
    finally:
        if owned:  # the version belongs to this command's run only
            os.environ.pop(RUN_VERSION_ENV, None)
        if not group_was_open:  # a group the caller opened stays theirs
            _close_process_group()


def _process_group_open() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _close_process_group() -> None:
    """Destroy the ``torch.distributed`` process group the command's run opened, if any.

    Lightning destroys it at exit only for NCCL; a Gloo group (CPU) left to the interpreter's
    shutdown can abort the process ("terminate called without an active exception") after the
    work is done. Every rank calls this at the end of a command; it waits for no other rank, so
    a rank that stopped early cannot make the others hang here.
    """
    import torch.distributed as dist

    if _process_group_open():
        dist.destroy_process_group()


_BOTH_ARGS_WARNING = r"(?s)LightningCLI's args parameter is intended to run from within Python"
_TRACEBACK_HEAD = "Traceback (most recent call last):"
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*): ?(.*)$")


def _worker_error(message: str) -> str | None:
    """Return the message of a user error raised in a ``DataLoader`` worker, else ``None``.

    PyTorch re-raises a worker's exception in the main process with the worker's formatted
    traceback as its message (or as a ``RuntimeError`` when the type cannot be rebuilt from a
    string); this reads the type and message of the last exception back from that text.
    """
    if _TRACEBACK_HEAD not in message:
        return None
    lines = message.rsplit(_TRACEBACK_HEAD, 1)[1].splitlines()
    for i, line in enumerate(lines):
        if not line or line.startswith(" "):
            continue
        match = _EXCEPTION_LINE.match(line)
        if match is None:
            return None
        kind = pydoc.locate(match.group(1))
        if isinstance(kind, type) and issubclass(kind, _USER_ERRORS):
            return "\n".join([match.group(2), *lines[i + 1 :]]).strip()
        return None
    return None


def user_error_message(error: BaseException) -> str | None:
    """Return the message to show for an error the user can fix, or ``None`` for other errors.

    User errors are :class:`~medllama_fusion.errors.InputError` (and subclasses such as
    ``DataProblemError``) and :class:`FileNotFoundError`, also when raised in a ``DataLoader``
    worker process or given as the direct cause (``raise ... from``) of another error.

    Args:
        error: The exception that ended the command.

    Returns:
        The message, or ``None`` when the error is not a user error (show the traceback).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        from_worker = _worker_error(text)
        if from_worker is not None:
            return from_worker
        if isinstance(current, _USER_ERRORS):
            if isinstance(current, FileNotFoundError) and current.filename and current.strerror:
                return f"{current.strerror}: {current.filename}"
            return text
        current = current.__cause__
    return None


def _debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def main(args: ArgsType = None) -> None:
    """Console entry point ``medllama-fusion`` (and ``python -m medllama_fusion``).

    ``compare`` runs :func:`medllama_fusion.cli.compare.main` (no model, no trainer); every other
    subcommand runs LightningCLI (:func:`cli_main`). An input error (see
    :func:`user_error_message`) is printed to stderr as ``medllama-fusion: error: <message>`` and
    ends the process with status 2; set the environment variable ``MEDLLAMA_FUSION_DEBUG=1`` to
    get the traceback instead.

    Args:
        args: Command-line arguments; ``sys.argv`` if None.
    """
    argv = sys.argv[1:] if args is None else args
    try:
        if isinstance(argv, list) and argv[:1] == ["compare"]:
            from medllama_fusion.cli.compare import main as compare

            compare(argv[1:])
            return
        cli_main(args)
    except Exception as error:
        message = user_error_message(error)
        if message is None or _debug_enabled():
            raise
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        print(f"({DEBUG_ENV}=1 shows the traceback)", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

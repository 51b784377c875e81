"""Command-line interface: ``medllama-fusion {fit,validate,test,predict,explain,export,optimize}``.

A :class:`~lightning.pytorch.cli.LightningCLI` subclass. Models and datamodules are selected by
``class_path`` (short names such as ``FusionClassifier``, ``ParallelFusion`` and
``OpenIDataModule`` resolve once :mod:`medllama_fusion` is imported; user subclasses by dotted
path). The number of labels and their names are linked from the datamodule to the model.
Shipped presets: ``python -m medllama_fusion.configs`` lists them.

Every :class:`~lightning.pytorch.callbacks.ModelCheckpoint` without a ``dirpath`` writes to the
stable folder ``<trainer.default_root_dir>/checkpoints``, so ``--ckpt_path last`` finds the
``last.ckpt`` of an earlier run with the same ``default_root_dir``. After each subcommand the
folders it wrote to are printed. The console entry point :func:`main` prints an
:class:`~medllama_fusion.errors.InputError` (or a :class:`FileNotFoundError`) as one line-prefixed
message and exits with status 2; ``MEDLLAMA_FUSION_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import pydoc
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from lightning.fabric.loggers.tensorboard import (
    _TENSORBOARD_AVAILABLE,
    _TENSORBOARDX_AVAILABLE,
)
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol, get_filesystem
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger

from medllama_fusion.cli.threads import NUM_THREADS_ENV, apply_thread_policy, parse_thread_setting
from medllama_fusion.configs import list_presets, preset_arguments
from medllama_fusion.errors import InputError
from medllama_fusion.trainers.callbacks import PredictionCSVWriter, RunConfigInCheckpoint
from medllama_fusion.trainers.operating_points import OperatingPoints

__all__ = [
    "DEBUG_ENV",
    "NUM_THREADS_ENV",
    "FusionCLI",
    "cli_main",
    "main",
    "resolve_preset_configs",
    "set_num_threads_from_env",
    "use_stable_checkpoint_dir",
    "user_error_message",
]

PROG = "medllama-fusion"
DEBUG_ENV = "MEDLLAMA_FUSION_DEBUG"
"""Environment variable: set to ``1`` to see the traceback of an input error."""
"""Environment variable: number of torch CPU threads for a command (unset: torch's default)."""

_USER_ERRORS: tuple[type[BaseException], ...] = (InputError, FileNotFoundError)


def use_stable_checkpoint_dir(trainer: Trainer) -> list[str]:
    """Give every ``ModelCheckpoint`` without a ``dirpath`` ``<default_root_dir>/checkpoints``.

    Lightning otherwise puts checkpoints in the logger's ``version_N`` folder, which is new for
    every run, so ``--ckpt_path last`` would look in the new, empty folder. A fixed folder per
    ``default_root_dir`` lets a later run find the newest ``last.ckpt``. Callbacks with their own
    ``dirpath`` are left alone.

    Args:
        trainer: A freshly built trainer (before ``fit``/``validate``/``test``/``predict``).

    Returns:
        The checkpoint folders of all ``ModelCheckpoint`` callbacks (unique, in order).
    """
    folder = os.path.join(trainer.default_root_dir, "checkpoints")
    if _is_local_file_protocol(folder):
        folder = os.path.realpath(os.path.expanduser(folder))
    dirs: list[str] = []
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        if callback.dirpath is None:
            callback.dirpath = folder
            # ModelCheckpoint picks its filesystem from dirpath when it is built (None = local).
            callback._fs = get_filesystem(folder)
        if str(callback.dirpath) not in dirs:
            dirs.append(str(callback.dirpath))
    return dirs


class FusionCLI(LightningCLI):
    """LightningCLI with the data → model label link, stable checkpoint folders and output paths.

    Besides what :class:`~lightning.pytorch.cli.LightningCLI` does, it links the data module's
    label names into the model, gives ``ModelCheckpoint`` callbacks without a ``dirpath`` the
    folder ``<trainer.default_root_dir>/checkpoints`` (see :func:`use_stable_checkpoint_dir`)
    and prints, after each subcommand, the folders it wrote checkpoints, logs and results to.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link ``data.label_names`` into ``model.init_args.label_names`` after instantiation."""
        parser.link_arguments(
            "data.label_names", "model.init_args.label_names", apply_on="instantiate"
        )
        parser.add_lightning_class_args(OperatingPoints, "operating_points")
        parser.add_argument(
            "--num_threads",
            type=int | Literal["auto"],
            default="auto",
            help="CPU threads of torch's intra-op pool: 'auto' (one for small models on the CPU, "
            "see medllama_fusion.cli.threads) or a number; MEDLLAMA_FUSION_NUM_THREADS overrides.",
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Build the trainer and give its checkpoint callbacks a stable folder.

        With the default ``logger`` and no TensorBoard installed, the trainer gets the
        ``CSVLogger`` Lightning would pick itself, without Lightning's notice about it.
        """
        config = self._get(self.config_init, "trainer", default={})
        if "logger" not in kwargs and config.get("logger") in (None, True):
            kwargs["logger"] = _default_logger(config.get("default_root_dir"))
        trainer = super().instantiate_trainer(**kwargs)
        use_stable_checkpoint_dir(trainer)
        subcommand = self.subcommand
        run_config = self.config.get(str(subcommand), self.config) if subcommand else self.config
        apply_thread_policy(
            run_config.get("num_threads", "auto"),
            on_cpu=isinstance(trainer.accelerator, CPUAccelerator),
            model=self.model,
            data_workers=int(getattr(self.datamodule, "num_workers", 0) or 0),
        )
        text = self._parser(subcommand).dump(run_config, skip_none=False, skip_validation=True)
        trainer.callbacks.append(RunConfigInCheckpoint(text, os.getcwd()))  # type: ignore[attr-defined]
        return trainer

    def _print_outputs(self, checkpoints: bool) -> None:
        trainer = self.trainer
        log_dir = trainer.log_dir or trainer.default_root_dir  # collective: every rank asks
        if not trainer.is_global_zero:
            return
        if checkpoints:
            for folder in use_stable_checkpoint_dir(trainer):
                print(f"{PROG}: checkpoints in {_shown(folder)}", flush=True)
        report_dir = getattr(self.model, "hparams", {}).get("report_dir")
        if report_dir:
            print(f"{PROG}: results in {_shown(str(report_dir))}", flush=True)
        print(f"{PROG}: logs and results in {_shown(log_dir)}", flush=True)

    def after_fit(self) -> None:
        """Print the checkpoint and log folders."""
        self._print_outputs(checkpoints=True)

    def after_validate(self) -> None:
        """Print the log folder."""
        self._print_outputs(checkpoints=False)

    def after_test(self) -> None:
        """Print the folder of the test tables, ROC plot and logs."""
        self._print_outputs(checkpoints=False)

    def after_predict(self) -> None:
        """Print the log folder (the prediction writer prints its own file)."""
        self._print_outputs(checkpoints=False)


def _default_logger(root: str | None) -> Logger | bool:
    """Lightning's default logger: TensorBoard when installed, else CSV under ``root``."""
    if _TENSORBOARD_AVAILABLE or _TENSORBOARDX_AVAILABLE:
        return True
    return CSVLogger(save_dir=root if root is not None else os.getcwd())


def _shown(path: str) -> str:
    """Return a local path made absolute (remote URLs unchanged), for messages."""
    return str(Path(path).resolve()) if _is_local_file_protocol(path) else path


def resolve_preset_configs(argv: list[str]) -> list[str]:
    """Replace ``--config NAME`` by the shipped preset's arguments when NAME is not a file.

    ``medllama-fusion fit --config quickstart`` then runs the packaged quickstart preset and
    ``--config paper/parallel_r2`` a paper preset, which stands for several ``--config`` files
    and its output folder (see :func:`~medllama_fusion.configs.preset_arguments`); existing
    files are passed through unchanged.

    Args:
        argv: Command-line arguments without the program name.

    Returns:
        The arguments with preset names replaced by their arguments.
    """
    presets = set(list_presets())

    def is_preset(value: str) -> bool:
        return not Path(value).exists() and value.removesuffix(".yaml") in presets

    out: list[str] = []
    expect_value = False
    for arg in argv:
        if expect_value and is_preset(arg):
            out[-1:] = preset_arguments(arg)
        elif arg.startswith("--config=") and is_preset(arg.split("=", 1)[1]):
            expanded = preset_arguments(arg.split("=", 1)[1])
            out += [
                f"{flag}={value}" for flag, value in zip(expanded[::2], expanded[1::2], strict=True)
            ]
        else:
            out.append(arg)
        expect_value = arg in ("--config", "-c")
    return out


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
    import medllama_fusion.models
    import medllama_fusion.trainers  # noqa: F401  (register the LightningModule subclasses)


def _names_a_subcommand(args: ArgsType) -> bool:
    """Whether ``args`` (a list) names a subcommand; dicts and namespaces always count."""
    if not isinstance(args, list):
        return True
    return any(arg in FusionCLI.subcommands() for arg in args)


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
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [PredictionCSVWriter()]},
            args=cli_args,
        )

    if args is None:  # read sys.argv ourselves: passing it as args makes LightningCLI warn
        with _command_line(resolve_preset_configs(sys.argv[1:])):
            return build(None)
    if isinstance(args, list):
        args = resolve_preset_configs(args)
    return build(args)


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

    An input error (see :func:`user_error_message`) is printed to stderr as
    ``medllama-fusion: error: <message>`` and ends the process with status 2; set the
    environment variable ``MEDLLAMA_FUSION_DEBUG=1`` to get the traceback instead.

    ``explain``, ``export`` and ``optimize`` run their own ``main``; everything else goes to
    LightningCLI.

    Args:
        args: Command-line arguments; ``sys.argv`` if None.
    """
    argv = sys.argv[1:] if args is None else args
    try:
        if isinstance(argv, list) and argv and argv[0] in ("explain", "export", "optimize"):
            from importlib import import_module

            modules = {
                "explain": "medllama_fusion.inference.explain",
                "export": "medllama_fusion.inference.export",
                "optimize": "medllama_fusion.cli.optimize",
            }
            import_module(modules[argv[0]]).main(argv[1:])
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

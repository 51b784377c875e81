"""Command-line interface: ``medllama-fusion {fit,validate,test,predict,explain,export} ...``.

A :class:`~lightning.pytorch.cli.LightningCLI` subclass. Models and datamodules are selected by
``class_path`` (short names such as ``FusionClassifier``, ``ParallelFusion`` and
``OpenIDataModule`` resolve once :mod:`medllama_fusion` is imported; user subclasses by dotted
path). The number of labels and their names are linked from the datamodule to the model.
Shipped presets: ``python -m medllama_fusion.configs`` lists them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from .callbacks import PredictionCSVWriter
from .configs import list_presets, preset_path
from .operating_points import OperatingPoints

__all__ = ["FusionCLI", "cli_main", "main", "resolve_preset_configs"]


class FusionCLI(LightningCLI):
    """LightningCLI with the data → model label link and a prediction CSV writer."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link ``data.label_names`` into ``model.init_args.label_names`` after instantiation."""
        parser.link_arguments(
            "data.label_names", "model.init_args.label_names", apply_on="instantiate"
        )
        parser.add_lightning_class_args(OperatingPoints, "operating_points")


def resolve_preset_configs(argv: list[str]) -> list[str]:
    """Replace ``--config NAME`` by the shipped preset's path when NAME is not a file.

    ``medllama-fusion fit --config quickstart`` then runs the packaged quickstart preset and
    ``--config paper/parallel_r2`` a paper preset; existing files are passed through unchanged.

    Args:
        argv: Command-line arguments without the program name.

    Returns:
        The arguments with preset names replaced by paths.
    """
    presets = set(list_presets())
    out: list[str] = []
    expect_value = False
    for arg in argv:
        if expect_value and not Path(arg).exists() and arg.removesuffix(".yaml") in presets:
            arg = str(preset_path(arg))
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
            if not Path(value).exists() and value.removesuffix(".yaml") in presets:
                arg = f"--config={preset_path(value)}"
        expect_value = arg in ("--config", "-c")
        out.append(arg)
    return out


def cli_main(args: ArgsType = None) -> FusionCLI:
    """Build and run the command-line interface and return it (for tests and notebooks).

    Args:
        args: Command-line arguments (list of strings, dict or Namespace); ``sys.argv`` if None.

    Returns:
        The :class:`FusionCLI` instance with ``model``, ``datamodule`` and ``trainer``.
    """
    import medllama_fusion.datamodules
    import medllama_fusion.models
    import medllama_fusion.trainers  # noqa: F401  (register the LightningModule subclasses)

    if args is None:
        args = sys.argv[1:]
    if isinstance(args, list):
        args = resolve_preset_configs(args)

    return FusionCLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [PredictionCSVWriter()]},
        args=args,
    )


def main(args: ArgsType = None) -> None:
    """Console entry point ``medllama-fusion`` (and ``python -m medllama_fusion``).

    ``explain`` and ``export`` run :func:`medllama_fusion.explain.main` and
    :func:`medllama_fusion.export.main`; everything else goes to LightningCLI.

    Args:
        args: Command-line arguments; ``sys.argv`` if None.
    """
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, list) and argv and argv[0] in ("explain", "export"):
        from importlib import import_module

        import_module(f"medllama_fusion.{argv[0]}").main(argv[1:])
        return
    cli_main(args)


if __name__ == "__main__":
    main()

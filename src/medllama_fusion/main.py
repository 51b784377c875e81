"""Command-line interface: ``medllama-fusion {fit,validate,test,predict} --config ...``.

A :class:`~lightning.pytorch.cli.LightningCLI` subclass. Models and datamodules are selected by
``class_path`` (short names such as ``FusionClassifier``, ``ParallelFusion`` and
``OpenIDataModule`` resolve once :mod:`medllama_fusion` is imported; user subclasses by dotted
path). The number of labels and their names are linked from the datamodule to the model.
Shipped presets: ``python -m medllama_fusion.configs`` lists them.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from .callbacks import PredictionCSVWriter

__all__ = ["FusionCLI", "cli_main", "main"]


class FusionCLI(LightningCLI):
    """LightningCLI with the data → model label link and a prediction CSV writer."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link ``data.label_names`` into ``model.init_args.label_names`` after instantiation."""
        parser.link_arguments(
            "data.label_names", "model.init_args.label_names", apply_on="instantiate"
        )


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

    Args:
        args: Command-line arguments; ``sys.argv`` if None.
    """
    cli_main(args)


if __name__ == "__main__":
    main()

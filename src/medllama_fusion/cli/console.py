"""Console entry point ``medllama-fusion``: the top-level help without importing Lightning.

``medllama-fusion --help`` (or no arguments) only lists the subcommands and presets, and
``medllama-fusion --version`` prints the installed version, so both are answered here from the
standard library in a fraction of a second; everything else goes to
:func:`medllama_fusion.cli.main.main` (LightningCLI), which imports torch and Lightning.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Sequence

__all__ = ["SUBCOMMANDS", "main", "top_level_help"]

PROG = "medllama-fusion"

SUBCOMMANDS: dict[str, str] = {
    "fit": "train a model (e.g. `medllama-fusion fit --config quickstart`)",
    "validate": "one evaluation epoch over the validation split",
    "test": "evaluate a checkpoint on the test split: AUROC table with 95% CIs",
    "predict": "write predictions.csv (probabilities, decisions) for test or unlabelled data",
    "audit": "where a checkpoint's AUROC comes from: each modality removed, label words masked",
    "explain": "token and image attributions of a checkpoint's predictions (HTML + PNG)",
    "export": "merge LoRA and write a self-contained model folder (save_pretrained layout)",
    "optimize": "write a run's data once as a sharded stream for multi-node training (LitData)",
    "compare": "paired AUROC difference of two models' predictions.csv (intervals, p-values)",
}
"""Subcommand → one-line description, as shown by ``medllama-fusion --help``."""


def top_level_help() -> str:
    """Return the text of ``medllama-fusion --help``."""
    from medllama_fusion.configs import list_presets

    width = max(len(name) for name in SUBCOMMANDS)
    lines = [
        f"usage: {PROG} [-h] [--version] {{{','.join(SUBCOMMANDS)}}} ...",
        "",
        "Multimodal chest X-ray + report classification with a LLaMA backbone, LoRA and",
        "parallel / serial / mixed fusion (arXiv 2412.01306).",
        "",
        "subcommands (add --help after one for all of its options):",
        *(f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()),
        "",
        "presets (--config NAME, or your own YAML file):",
        *textwrap.wrap(", ".join(list_presets()), 96, initial_indent="  ", subsequent_indent="  "),
        "",
        "options:",
        "  -h, --help  show this message and exit",
        "  --version   print the installed version and exit",
        "",
        "Input errors print one message and exit with status 2; set MEDLLAMA_FUSION_DEBUG=1 to",
        "see the traceback.",
    ]
    return "\n".join(lines)


def main(args: Sequence[str] | None = None) -> None:
    """Run ``medllama-fusion``: the top-level help here, everything else in LightningCLI.

    Args:
        args: Command-line arguments; ``sys.argv[1:]`` if None.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv == ["--version"]:
        from medllama_fusion._version import version

        print(f"{PROG} {version()}", flush=True)
        return
    if not argv or argv in (["-h"], ["--help"]):
        try:
            print(top_level_help(), file=sys.stdout if argv else sys.stderr, flush=True)
        except BrokenPipeError:  # e.g. `medllama-fusion --help | head`: the reader left early
            # As the Python docs advise: point stdout at devnull so the exit flush is silent.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        if not argv:
            print(f"{PROG}: error: choose a subcommand", file=sys.stderr, flush=True)
            sys.exit(2)
        return
    from medllama_fusion.cli.main import main as cli

    cli(argv if args is not None else None)


if __name__ == "__main__":
    main()

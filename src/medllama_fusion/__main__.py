"""``python -m medllama_fusion`` runs the command-line interface."""

from medllama_fusion.cli.console import main

__all__ = ["main"]

if __name__ == "__main__":
    main()

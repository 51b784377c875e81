"""``python -m medllama_fusion`` runs the command-line interface."""

from .console import main

__all__ = ["main"]

if __name__ == "__main__":
    main()

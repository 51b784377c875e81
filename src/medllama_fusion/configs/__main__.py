"""``python -m medllama_fusion.configs [name]`` prints preset paths."""

import sys

from . import _cli

__all__: list[str] = []

raise SystemExit(_cli(sys.argv[1:]))

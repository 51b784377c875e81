"""The command-line tests use the trainer tests' demo data and tiny configuration."""

from tests.trainers.conftest import CONF, cli_args, demo_root, tiny_conf

__all__ = ["CONF", "cli_args", "demo_root", "tiny_conf"]

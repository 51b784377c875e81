"""The data tests use the data module tests' demo data (a private copy per test)."""

from tests.datamodules.conftest import demo_root, demo_template

__all__ = ["demo_root", "demo_template"]

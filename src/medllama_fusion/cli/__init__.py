"""The ``medllama-fusion`` command line (LightningCLI)."""

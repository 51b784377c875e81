"""Silence third-party notices that say nothing about the user's run.

Each filter names one message of one library, so everything else (including every warning about
the user's data, model or trainer settings) still shows:

- bitsandbytes logs "Failed to load CPU gemm_4bit_forward from kernels-community" while it is
  imported, and ``peft`` imports it on its own import even when nothing is quantized;
- on the same import, bitsandbytes asks the ``kernels`` package (a dependency of transformers)
  for a CPU kernel, and with ``HF_HUB_OFFLINE=1`` ``kernels`` logs "Skipping publisher trust
  check for 'kernels-community/quantization-bitsandbytes' ..." on every command, a check about
  a kernel of bitsandbytes' choosing that no setting of ours or the user's changes;
- Lightning logs a tip advertising ``litlogger`` whenever a trainer configures its loggers;
- Lightning's ``utilities/_pytree.py`` triggers torch's ``LeafSpec`` FutureWarning on every
  batch transfer (an internal of Lightning, nothing a user can change);
- ``python -m medllama_fusion.<package>.<module>`` makes :mod:`runpy` warn that the module was
  already imported by its package's ``__init__`` before it runs as ``__main__``; our command
  modules only define functions and run ``main()``, so running them twice that way is harmless.

:func:`install_evaluation_filters` adds one more for the commands that evaluate a checkpoint
(``validate``, ``test``, ``predict``, ...; the command line installs it): Lightning restores the
fit's ``ModelCheckpoint`` state into the evaluation's own run folder and says "The dirpath has
changed ...", but an evaluation writes no checkpoint, so where one would go does not matter.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["install_evaluation_filters", "install_filters"]

_BNB_LOGGER = "bitsandbytes.backends.cpu.ops"
_BNB_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"
_KERNELS_LOGGER = "kernels._internals.hf_hub"
_KERNELS_TRUST_NOTICE = (
    "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes' because "
    "Hugging Face Hub is in offline mode."
)
_LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
_LITLOGGER_TIP = "try installing [litlogger]"
_LEAFSPEC_MESSAGE = r".*isinstance\(treespec, LeafSpec\).*"
_DIRPATH_CHANGED = r"The dirpath has changed from .* won't be reloaded"
_RUNPY_MESSAGE = r"'medllama_fusion\.[\w.]+' found in sys\.modules after import of package"


class _DropMessages(logging.Filter):
    """A logging filter that drops records whose message contains one of the given texts."""

    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False (drop) for a record whose message contains one of ``texts``."""
        message = record.getMessage()
        return not any(text in message for text in self.texts)


_INSTALLED = False


def install_filters() -> None:
    """Install the logging and warning filters once (``import medllama_fusion`` does)."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    logging.getLogger(_BNB_LOGGER).addFilter(_DropMessages(_BNB_KERNEL_NOTICE))
    logging.getLogger(_KERNELS_LOGGER).addFilter(_DropMessages(_KERNELS_TRUST_NOTICE))
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).addFilter(_DropMessages(_LITLOGGER_TIP))
    warnings.filterwarnings("ignore", message=_LEAFSPEC_MESSAGE, category=FutureWarning)
    warnings.filterwarnings("ignore", message=_RUNPY_MESSAGE, category=RuntimeWarning)


def install_evaluation_filters() -> None:
    """Install the filter of the commands that evaluate a checkpoint (see the module docstring)."""
    warnings.filterwarnings("ignore", message=_DIRPATH_CHANGED)

"""Optional features and the extras that install them.

The core install trains, evaluates and predicts. A few features need more packages, installed
with an extra, e.g. ``pip install "medllama-fusion[qlora]"``:

- ``qlora`` (bitsandbytes): a 4-/8-bit frozen backbone (``BackboneConfig.quantization``),
- ``explain`` (captum, matplotlib): ``medllama-fusion explain`` and
  :mod:`medllama_fusion.inference.explain`,
- ``gguf`` (gguf): GGUF backbones and tokenizers,
- ``dicom`` (pydicom): DICOM images,
- ``streaming`` (litdata): ``medllama-fusion optimize`` and ``StreamingDataModule``,
- ``plots`` (matplotlib): ``roc_curves.png`` and ``reliability_diagram.png`` of ``test`` (without
  it, ``test`` skips the two pictures and says so; every table is still written),
- ``all``: every extra above.

:func:`require` is called where a feature starts. Without its extra it raises an
:class:`~medllama_fusion.errors.InputError` whose message is one line naming the command to run,
so the command line prints it as ``medllama-fusion: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import importlib

from medllama_fusion.errors import InputError

__all__ = ["EXTRAS", "missing_extra", "require"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "qlora": ("bitsandbytes",),
    "explain": ("captum", "matplotlib"),
    "gguf": ("gguf",),
    "dicom": ("pydicom",),
    "streaming": ("litdata",),
    "plots": ("matplotlib",),
}
"""Extra → the modules it installs (import names)."""


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def missing_extra(extra: str, feature: str) -> str | None:
    """Say what to install for ``feature``, or return ``None`` when nothing is missing.

    Args:
        extra: A key of :data:`EXTRAS`.
        feature: What needs the extra, as the message names it (e.g. ``"DICOM images"``).

    Returns:
        One line naming the missing packages and the ``pip install`` command, or ``None`` when
        every module of the extra imports.
    """
    missing = [module for module in EXTRAS[extra] if not _importable(module)]
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return (
        f"{feature}: {' and '.join(missing)} {verb} not installed; "
        f'run: pip install "medllama-fusion[{extra}]"'
    )


def require(extra: str, feature: str) -> None:
    """Raise an :class:`~medllama_fusion.errors.InputError` unless the extra's modules import.

    Args:
        extra: A key of :data:`EXTRAS`.
        feature: What needs the extra, as the message names it (e.g. ``"DICOM images"``).

    Raises:
        InputError: One line naming the ``pip install`` command to run.
    """
    message = missing_extra(extra, feature)
    if message is not None:
        raise InputError(message)

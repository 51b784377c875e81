"""How many CPU threads torch's intra-op pool uses in a run (``--num_threads``).

Small models on the CPU (the quickstart, the test configurations) gain little from several
threads, and lose a lot when other processes compete for the same cores: on 2 busy cores one
quickstart epoch took 160.9 s with torch's default threads and 13.0 s with one. The policy of
``num_threads: auto`` (the default):

- a run on a GPU (or another accelerator) keeps torch's default;
- a CPU run of a model with fewer than :data:`SMALL_MODEL_PARAMETERS` parameters uses one thread;
- a larger CPU run uses torch's default, capped to the CPUs this process may run on minus the
  DataLoader workers (each worker is a process of its own that needs a core).

``--num_threads N`` (or ``num_threads: N`` in a config) sets ``N`` threads; the environment
variable ``MEDLLAMA_FUSION_NUM_THREADS`` (a number or ``auto``) takes precedence over both, e.g. for
running several trainings side by side.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import torch
from torch import nn

from medllama_fusion.errors import InputError

logger = logging.getLogger(__name__)

NUM_THREADS_ENV = "MEDLLAMA_FUSION_NUM_THREADS"
"""Environment variable that overrides ``--num_threads`` (a positive integer or ``auto``)."""

SMALL_MODEL_PARAMETERS = 20_000_000
"""Below this many parameters a CPU run uses one thread under ``num_threads: auto``."""

ThreadSetting = int | Literal["auto"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parse_thread_setting(value: str | int, source: str) -> ThreadSetting:
    """Read a thread setting (a positive integer or ``"auto"``).

    Args:
        value: The setting as given.
        source: Where it came from, for the error message.

    Returns:
        The integer or ``"auto"``.

    Raises:
        InputError: For anything else.
    """
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"{source}={value!r} is not a positive integer or 'auto'; set e.g. 1.")
    return int(text)


def choose_num_threads(
    setting: ThreadSetting,
    on_cpu: bool,
    num_parameters: int,
    data_workers: int = 0,
    default: int | None = None,
    cpus: int | None = None,
) -> int | None:
    """Return the thread count of a run, or ``None`` to keep torch's default.

    Args:
        setting: ``"auto"`` or a fixed number of threads.
        on_cpu: Whether the model trains on the CPU.
        num_parameters: Parameters of the model (frozen ones included).
        data_workers: DataLoader worker processes of the run.
        default: torch's current thread count (default: ``torch.get_num_threads()``).
        cpus: CPUs available to the process (default: :func:`available_cpus`).

    Returns:
        The number of threads to set, or ``None``.
    """
    if setting != "auto":
        return int(setting)
    if not on_cpu:
        return None
    if num_parameters < SMALL_MODEL_PARAMETERS:
        return 1
    default = torch.get_num_threads() if default is None else default
    cpus = available_cpus() if cpus is None else cpus
    return max(1, min(default, cpus - data_workers))


def apply_thread_policy(
    setting: str | int, on_cpu: bool, model: nn.Module, data_workers: int = 0
) -> int | None:
    """Set torch's intra-op threads for a run (see the module docstring) and log the choice.

    Args:
        setting: ``num_threads`` of the run (``"auto"`` or a number); the environment variable
            :data:`NUM_THREADS_ENV` wins when set.
        on_cpu: Whether the model trains on the CPU.
        model: The model (its parameters are counted).
        data_workers: DataLoader worker processes.

    Returns:
        The number of threads set, or ``None`` when torch's default was kept.

    Raises:
        InputError: For an invalid setting.
    """
    from_env = os.environ.get(NUM_THREADS_ENV, "").strip()
    source = NUM_THREADS_ENV if from_env else "num_threads"
    parsed = parse_thread_setting(from_env or setting, source)
    count = choose_num_threads(
        parsed, on_cpu, sum(p.numel() for p in model.parameters()), data_workers
    )
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
        logger.info("using %d CPU thread(s) (%s=%s)", count, source, from_env or setting)
    return count


__all__ = [
    "NUM_THREADS_ENV",
    "SMALL_MODEL_PARAMETERS",
    "ThreadSetting",
    "apply_thread_policy",
    "available_cpus",
    "choose_num_threads",
    "parse_thread_setting",
]

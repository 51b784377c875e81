"""The resumable training loader: torchdata's ``StatefulDataLoader`` with per-sample seeds.

:class:`ResumableDataLoader` is a :class:`~torchdata.stateful_dataloader.StatefulDataLoader`
(which Lightning saves in checkpoints under ``loops.fit_loop.state_dict.combined_loader`` and
restores on resume) over a :class:`SeededDataset`, ordered by a :class:`ResumableSampler`:

- the epoch's order is a function of ``(seed, epoch)`` only (a
  :class:`~torch.utils.data.distributed.DistributedSampler`, so Lightning keeps it under DDP and
  each rank reads its own shard, reshuffled every epoch; outside DDP it is one shard of one),
- every sample's augmentation is seeded by ``(seed, epoch, index)``: the sampler hands
  ``(index, sample_seed)`` pairs to :class:`SeededDataset`, which draws the sample under
  :func:`torch.random.fork_rng` with that seed. Samples therefore do not depend on the number of
  workers, on which worker reads them, or on the global RNG (which stays untouched),
- the loader's state holds the sampler's epoch and position, so a checkpoint written mid-epoch
  resumes right after the consumed batches, and the skipped samples are never loaded.

The dropout RNG of the model is not part of the loader; see
:class:`~medllama_fusion.trainers.callbacks.EpochSeed`, which reseeds it per batch.

:class:`LoaderSettings` holds the loader settings every data module shares, and
:class:`TrainLoaderState` keeps a training loader's position for the data module's checkpoint
state (restored now, or once the loader is built).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from medllama_fusion.errors import InputError


@dataclass(frozen=True)
class LoaderSettings:
    """How batches are loaded (every loader of a data module).

    Args:
        batch_size: Batch size.
        num_workers: DataLoader worker processes.
        pin_memory: Pin host memory; ``None`` = when CUDA is available.
        persistent_workers: Keep workers between epochs; ``None`` = when there are workers.
        prefetch_factor: Batches prefetched per worker (only with workers).
        drop_last: Drop the last incomplete training batch.
        shuffle_seed: Seed of the training order and augmentation (per epoch and sample);
            ``None`` = the ``seed_everything`` seed in effect when the data module is built
            (``PL_GLOBAL_SEED``), else 0.
    """

    batch_size: int = 20
    num_workers: int = 0
    pin_memory: bool | None = None
    persistent_workers: bool | None = None
    prefetch_factor: int | None = 2
    drop_last: bool = False
    shuffle_seed: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"loader.batch_size must be >= 1; got {self.batch_size}.")
        if self.num_workers < 0:
            raise InputError(f"loader.num_workers must be >= 0; got {self.num_workers}.")

    def seed(self) -> int:
        """The shuffle seed: ``shuffle_seed``, else ``PL_GLOBAL_SEED``, else 0."""
        if self.shuffle_seed is not None:
            return self.shuffle_seed
        return int(os.environ.get("PL_GLOBAL_SEED", "0"))

    def options(self, collate_fn: Callable[[Any], Any]) -> dict[str, Any]:
        """DataLoader arguments every loader shares.

        Args:
            collate_fn: The batch collator.

        Returns:
            ``batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``,
            ``prefetch_factor`` and ``collate_fn``.
        """
        workers = self.num_workers > 0
        keep = workers if self.persistent_workers is None else self.persistent_workers
        return {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": torch.cuda.is_available() if self.pin_memory is None else self.pin_memory,
            "persistent_workers": keep and workers,
            "prefetch_factor": self.prefetch_factor if workers else None,
            "collate_fn": collate_fn,
        }


class TrainLoaderState:
    """A training loader's position in a data module's checkpoint state.

    Lightning also saves the loader's state in its fit loop, but restores it only when the loader
    is built after the checkpoint is loaded; ``trainer.estimated_stepping_batches`` (the default
    learning-rate schedule) builds it earlier, so the data module carries the position itself.

    Args:
        key: The key of the state in the data module's ``state_dict``.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.loader: Any = None
        self.pending: dict[str, Any] | None = None

    def attach(self, loader: Any) -> None:
        """Track ``loader`` (a new epoch's loader) and give it a pending restored position."""
        self.loader = loader
        if self.pending is not None:
            loader.load_state_dict(self.pending)
            self.pending = None

    def state_dict(self) -> dict[str, Any]:
        """``{key: position}``, or ``{}`` before a loader exists."""
        if self.loader is None:
            return {}
        return {self.key: self.loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> bool:
        """Restore a position (now, or when the loader is attached).

        Args:
            state_dict: A dict from :meth:`state_dict`.

        Returns:
            Whether ``state_dict`` held a position under this key.
        """
        state = state_dict.get(self.key)
        if not state:
            return False
        if self.loader is not None:
            self.loader.load_state_dict(state)
        else:
            self.pending = dict(state)
        return True


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Return the augmentation seed of sample ``index`` in ``epoch`` (a 32-bit integer).

    Args:
        seed: Loader seed.
        epoch: Epoch number.
        index: Dataset index.

    Returns:
        A seed that depends on the three numbers only (NumPy ``SeedSequence`` mixing).
    """
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SeededDataset(Dataset[Any]):
    """Dataset wrapper whose items are drawn under a per-sample torch seed.

    Kept because ``StatefulDataLoader`` restores worker order but not worker RNG streams, which
    also depend on ``num_workers``; per-sample seeds make augmentation independent of both.

    ``dataset[(index, seed)]`` returns ``inner[index]`` computed inside
    :func:`torch.random.fork_rng` after seeding torch's CPU generator, so random transforms (the
    torchvision v2 augmentations use the torch RNG) are reproducible per sample and the caller's
    RNG state is unchanged. A plain ``int`` key reads ``inner[index]`` without reseeding.

    Args:
        dataset: The wrapped map-style dataset (must have ``len``).

    Raises:
        TypeError: If ``dataset`` has no ``len()``.
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        if not isinstance(dataset, Sized):
            raise TypeError(
                f"dataset {type(dataset).__name__} has no len(); SeededDataset needs a map-style "
                "dataset with __len__."
            )
        self.dataset = dataset

    def __len__(self) -> int:
        """Return the length of the wrapped dataset."""
        assert isinstance(self.dataset, Sized)
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        """Return the item for ``index`` or ``(index, seed)`` (see the class docstring)."""
        if isinstance(key, tuple):
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                # the CPU generator only: torch.manual_seed would also queue lazy seeding of
                # every accelerator backend, recording a stack trace per call (~0.7 ms/sample)
                torch.default_generator.manual_seed(seed)
                return self.dataset[index]
        return self.dataset[key]


class ResumableSampler(StatefulDistributedSampler):
    """torchdata's stateful shard sampler that yields ``(index, sample_seed)`` and saves its epoch.

    Kept as a subclass to hand out per-sample seeds and to save the epoch (torchdata saves only
    the position), so a restored position applies only to the epoch it was saved in.

    A :class:`~torch.utils.data.distributed.DistributedSampler` (same order, padding and
    ``drop_last`` rules) whose ``num_replicas``/``rank`` default to the initialised process group,
    or to one replica outside distributed runs. Its state is ``{"yielded", "epoch", "seed",
    "num_samples", "num_replicas"}``; a state from another seed, dataset size or number of shards
    restarts the epoch from its first sample with a warning (the order cannot be reproduced).

    Args:
        dataset: The dataset (only its length is used).
        shuffle: Shuffle with a generator seeded by ``seed + epoch``.
        seed: Shuffle and augmentation seed.
        drop_last: Drop the tail so that every replica gets the same number of indices (else the
            shards are padded by repeating indices).
        num_replicas: Number of shards; ``None`` = world size (1 without a process group).
        rank: This shard; ``None`` = global rank (0 without a process group).
    """

    def __init__(
        self,
        dataset: Sized,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        super().__init__(
            dataset,  # type: ignore[arg-type]  # only len() is used
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; a different epoch drops a pending resume position.

        Args:
            epoch: Epoch number.
        """
        if epoch != self.epoch:
            self.next_yielded = None
            self.yielded = 0
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        """Yield ``(index, sample_seed)`` for this epoch, after the restored position."""
        epoch = self.epoch
        for index in super().__iter__():
            yield index, sample_seed(self.seed, epoch, index)

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"yielded", "epoch", "seed", "num_samples", "num_replicas"}``."""
        return {
            **super().state_dict(),
            "epoch": self.epoch,
            "seed": self.seed,
            "num_samples": len(self.dataset),  # type: ignore[arg-type]
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the epoch and resume right after its yielded samples on the next iteration.

        Args:
            state_dict: A dict from :meth:`state_dict`.
        """
        size = len(self.dataset)  # type: ignore[arg-type]
        replicas = state_dict.get("num_replicas", self.num_replicas)
        saved = (state_dict.get("seed"), state_dict.get("num_samples"), replicas)
        self.set_epoch(int(state_dict.get("epoch") or 0))
        if saved != (self.seed, size, self.num_replicas):
            rank_zero_warn(
                f"the checkpoint's train loader state (seed {saved[0]}, {saved[1]} samples, "
                f"{saved[2]} process(es)) does not match this loader (seed {self.seed}, {size} "
                f"samples, {self.num_replicas} process(es)): epoch {self.epoch} restarts from its "
                "first batch. Resume with the same data, shuffle seed and number of processes for "
                "an exact continuation."
            )
            self.next_yielded = None
            return
        super().load_state_dict(state_dict)


def _sampler_position(state: dict[str, Any], batch_size: int) -> dict[str, Any] | None:
    """Return the sampler state inside a loader state (either worker layout, or the old format)."""
    if "batches" in state:  # written by this library's loader before it used torchdata
        return {**state, "yielded": int(state["batches"]) * batch_size}
    snapshot = state.get("_snapshot")
    main = snapshot.get("_main_snapshot", {}) if isinstance(snapshot, dict) else state
    position = (main.get("_sampler_iter_state") or {}).get("sampler_state")
    if not isinstance(position, dict):
        return None
    steps = int(state.get("_steps_since_snapshot", 0))
    return {**position, "yielded": int(position.get("yielded", 0)) + steps * batch_size}


class ResumableDataLoader(StatefulDataLoader):
    """Training loader: a ``StatefulDataLoader`` over seeded samples in a seeded shard order.

    Kept as a thin subclass because Lightning creates a resumed epoch's iterator (and starts its
    workers) before it calls ``set_epoch``; iteration here starts at the first ``next()``.

    See the module docstring. torchdata provides the state (a position consistent with the
    batches handed out, also under worker prefetching); restoring it sets the sampler's epoch and
    position, so a state loads into a loader with any ``num_workers``. Extra keyword arguments
    (``num_workers``, ``collate_fn``, ``pin_memory``, ``persistent_workers``,
    ``prefetch_factor``, ...) go to :class:`~torchdata.stateful_dataloader.StatefulDataLoader`;
    the sampler is built here.

    Args:
        dataset: Map-style dataset (wrapped in :class:`SeededDataset`).
        batch_size: Batch size.
        shuffle: Shuffle each epoch (order seeded by ``(seed, epoch)``).
        seed: Shuffle and augmentation seed.
        drop_last: Drop the last incomplete batch of each shard.
        **kwargs: Other ``StatefulDataLoader`` arguments.

    Raises:
        ValueError: If ``sampler``, ``batch_sampler`` or ``generator`` is passed, or for a
            ``batch_size`` below 1.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        **kwargs: Any,
    ) -> None:
        for name in ("sampler", "batch_sampler", "generator"):
            if kwargs.pop(name, None) is not None:
                raise ValueError(
                    f"ResumableDataLoader builds its own {name}; do not pass {name}= (use a plain "
                    "DataLoader if you need a custom one)."
                )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        seeded = dataset if isinstance(dataset, SeededDataset) else SeededDataset(dataset)
        sampler = ResumableSampler(seeded, shuffle=shuffle, seed=seed, drop_last=drop_last)
        # The loader's own generator: creating an iterator (worker base seed) never touches the
        # global RNG, which belongs to the model (dropout).
        generator = torch.Generator().manual_seed(seed)
        with warnings.catch_warnings():  # torchdata 0.11 calls torch's deprecated set_vital
            warnings.filterwarnings("ignore", ".*set_vital.*deprecated", UserWarning)
            super().__init__(
                seeded,
                batch_size=batch_size,
                sampler=sampler,
                drop_last=drop_last,
                generator=generator,
                **kwargs,
            )
        self.seed = seed
        self.shuffle = shuffle

    @property
    def resumable_sampler(self) -> ResumableSampler:
        """The :class:`ResumableSampler` that orders this loader."""
        assert isinstance(self.sampler, ResumableSampler)
        return self.sampler

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the sampler (Lightning calls the sampler's ``set_epoch`` directly).

        Args:
            epoch: Epoch number.
        """
        self.resumable_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        """Iterate over this epoch's batches; the underlying iterator starts at the first batch."""
        yield from super().__iter__()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume right after the saved batches when the next iteration is the saved epoch.

        When Lightning moves on to the next epoch (a checkpoint on an epoch's last batch), that
        epoch starts from its beginning. Accepts the state of a loader with any ``num_workers``
        and the state of this library's loader before it used torchdata.

        Args:
            state_dict: A state from :meth:`state_dict` (``{}`` does nothing).

        Raises:
            ValueError: If the state holds no sampler position (not a state of this loader).
        """
        super().load_state_dict({})
        if not state_dict:
            return
        position = _sampler_position(state_dict, self._batch())
        if position is None:
            raise ValueError(
                f"train loader state with keys {sorted(state_dict)} holds no sampler position; it "
                "was not written by ResumableDataLoader. Resume from a checkpoint of the same "
                "data module."
            )
        self.resumable_sampler.load_state_dict(position)

    def _batch(self) -> int:
        """The batch size (always set: the loader is built with ``batch_size >= 1``)."""
        assert self.batch_size is not None
        return self.batch_size


__all__ = [
    "LoaderSettings",
    "ResumableDataLoader",
    "ResumableSampler",
    "SeededDataset",
    "TrainLoaderState",
    "sample_seed",
]

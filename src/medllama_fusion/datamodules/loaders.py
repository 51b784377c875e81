"""A resumable training DataLoader: a checkpoint written mid-epoch resumes exactly.

Lightning saves and restores a training loader's state when the loader has ``state_dict()`` /
``load_state_dict()`` (the fit loop stores it under ``loops.fit_loop.state_dict.combined_loader``;
it skips the restore when the loader was built early for ``trainer.estimated_stepping_batches``,
so :class:`~medllama_fusion.datamodules.base.FusionDataModule` also saves and restores it as the
data module's state). :class:`ResumableDataLoader` provides both:

- the epoch's order is a function of ``(seed, epoch)`` only (:class:`ResumableSampler`, a
  :class:`~torch.utils.data.distributed.DistributedSampler`, so Lightning keeps it under DDP and
  each rank reads its own shard; outside DDP it is one shard of one),
- every sample's augmentation is seeded by ``(seed, epoch, index)``: the sampler hands
  ``(index, sample_seed)`` pairs to :class:`SeededDataset`, which draws the sample under
  :func:`torch.random.fork_rng` with that seed. Samples therefore do not depend on the number of
  workers, on which worker reads them, or on the global RNG (which stays untouched),
- the state is ``{"epoch", "batches", "seed", "num_samples"}``: the epoch being read and how many
  batches of it were handed out. After :meth:`ResumableDataLoader.load_state_dict` the next
  iteration starts right after those batches: the sampler skips their indices, so the skipped
  samples are never loaded. The skip applies to one iteration only.

Iterating is lazy: the underlying iterator (and its worker processes) starts at the first
``next()``, after Lightning has called ``set_epoch``, so worker prefetching always uses the
current epoch's order. The dropout RNG of the model is not part of the loader; see
:class:`~medllama_fusion.callbacks.EpochSeed`, which reseeds it per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

STATE_KEYS: tuple[str, ...] = ("epoch", "batches", "seed", "num_samples")
"""Keys of :meth:`ResumableDataLoader.state_dict`."""


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

    ``dataset[(index, seed)]`` returns ``inner[index]`` computed inside
    :func:`torch.random.fork_rng` after ``torch.manual_seed(seed)``, so random transforms (the
    torchvision v2 augmentations use the torch RNG) are reproducible per sample and the caller's
    RNG state is unchanged. A plain ``int`` key reads ``inner[index]`` without reseeding.

    Args:
        dataset: The wrapped map-style dataset (must have ``len``).
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
                torch.manual_seed(seed)
                return self.dataset[index]
        return self.dataset[key]


class ResumableSampler(DistributedSampler[Any]):
    """(seed, epoch)-seeded shard sampler that yields ``(index, sample_seed)`` and can skip ahead.

    A :class:`~torch.utils.data.distributed.DistributedSampler` (same order, padding and
    ``drop_last`` rules) whose ``num_replicas``/``rank`` default to the initialised process group,
    or to one replica outside distributed runs. :meth:`skip_next` drops the first indices of the
    next iteration only (used to resume mid-epoch).

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
        self._skip = 0

    def skip_next(self, count: int) -> None:
        """Skip the first ``count`` indices of the next iteration (this shard's indices).

        Args:
            count: Number of indices to skip (>= 0).

        Raises:
            ValueError: If ``count`` is negative.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0 indices to skip; got {count}.")
        self._skip = count

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Yield ``(index, sample_seed)`` for this epoch, after the pending skip."""
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        epoch = self.epoch
        for index in indices[skip:]:
            yield index, sample_seed(self.seed, epoch, index)


class ResumableDataLoader(DataLoader[Any]):
    """Training DataLoader with Lightning-compatible ``state_dict``/``load_state_dict``.

    See the module docstring. Extra keyword arguments (``num_workers``, ``collate_fn``,
    ``pin_memory``, ``persistent_workers``, ``prefetch_factor``, ...) go to
    :class:`~torch.utils.data.DataLoader`; ``sampler``/``batch_sampler`` are built here.

    Args:
        dataset: Map-style dataset (wrapped in :class:`SeededDataset`).
        batch_size: Batch size.
        shuffle: Shuffle each epoch (order seeded by ``(seed, epoch)``).
        seed: Shuffle and augmentation seed.
        drop_last: Drop the last incomplete batch of each shard.
        **kwargs: Other :class:`~torch.utils.data.DataLoader` arguments.

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
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"ResumableDataLoader builds its own {name}; do not pass {name}= (use a plain "
                    "DataLoader if you need a custom one)."
                )
            kwargs.pop(name, None)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        seeded = dataset if isinstance(dataset, SeededDataset) else SeededDataset(dataset)
        sampler = ResumableSampler(seeded, shuffle=shuffle, seed=seed, drop_last=drop_last)
        # The loader's own generator: creating an iterator (worker base seed) never touches the
        # global RNG, which belongs to the model (dropout).
        generator = torch.Generator().manual_seed(seed)
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
        self._epoch = 0
        self._batches = 0
        self._resume: tuple[int, int] | None = None

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
        """Iterate lazily over this epoch's batches (see the module docstring)."""
        return self._iterate()

    def _iterate(self) -> Iterator[Any]:
        """Start the underlying iterator at the first ``next()`` and count the batches given."""
        sampler = self.resumable_sampler
        self._epoch, self._batches = sampler.epoch, 0
        resume, self._resume = self._resume, None
        if resume is not None and resume[0] == sampler.epoch and resume[1] < len(self):
            sampler.skip_next(resume[1] * self._batch_size())
            self._batches = resume[1]
        for batch in super().__iter__():
            self._batches += 1  # counted before the batch is used: a checkpoint saved while it
            yield batch  # is being trained on records it as consumed

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"epoch", "batches", "seed", "num_samples"}`` of the current iteration."""
        return {
            "epoch": self._epoch,
            "batches": self._batches,
            "seed": self.seed,
            "num_samples": len(self.resumable_sampler.dataset),  # type: ignore[arg-type]
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the saved epoch right after its consumed batches on the next iteration.

        The skip applies only if the next iteration is the saved epoch with batches left (when
        Lightning moves on to the next epoch, e.g. after a checkpoint on the epoch's last batch,
        that epoch starts from its beginning). When the saved seed or dataset size differs from
        this loader's, the order cannot be reproduced: a warning is issued and the epoch
        restarts from its first batch.

        Args:
            state_dict: A dict from :meth:`state_dict`.

        Raises:
            ValueError: If keys are missing (not a state of this loader).
        """
        missing = [key for key in STATE_KEYS if key not in state_dict]
        if missing:
            raise ValueError(
                f"train loader state {sorted(state_dict)} lacks {missing}; it was not written by "
                "ResumableDataLoader. Resume from a checkpoint of the same data module."
            )
        epoch, batches = int(state_dict["epoch"]), int(state_dict["batches"])
        sampler = self.resumable_sampler
        sampler.set_epoch(epoch)
        self._epoch, self._batches, self._resume = epoch, 0, None
        size = len(sampler.dataset)  # type: ignore[arg-type]
        if state_dict["seed"] != self.seed or state_dict["num_samples"] != size:
            rank_zero_warn(
                f"the checkpoint's train loader state (seed {state_dict['seed']}, "
                f"{state_dict['num_samples']} samples) does not match this loader (seed "
                f"{self.seed}, {size} samples): epoch {epoch} restarts from its first batch. "
                "Resume with the same data and shuffle seed for an exact continuation."
            )
            return
        self._resume = (epoch, batches)

    def _batch_size(self) -> int:
        """The batch size (always set: the loader is built with ``batch_size >= 1``)."""
        assert self.batch_size is not None
        return self.batch_size


__all__ = [
    "STATE_KEYS",
    "ResumableDataLoader",
    "ResumableSampler",
    "SeededDataset",
    "sample_seed",
]

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from medllama_fusion.data.loaders import ResumableDataLoader, ResumableSampler


class NoisyDataset(Dataset[dict[str, Any]]):
    """Index plus a random draw (like an augmentation) and a record of every index loaded."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.loaded.append(index)
        return {"index": index, "noise": torch.rand(3)}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "index": torch.tensor([item["index"] for item in items]),
        "noise": torch.stack([item["noise"] for item in items]),
    }


def epoch_batches(loader: ResumableDataLoader, epoch: int, take: int | None = None) -> list[Any]:
    loader.set_epoch(epoch)  # what Lightning does before each epoch
    out = []
    for batch in loader:
        out.append(batch)
        if take is not None and len(out) == take:
            break
    return out


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x["index"], y["index"]) and torch.equal(x["noise"], y["noise"])
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_continues_exactly_without_loading_skipped(workers: int) -> None:
    kwargs: dict[str, Any] = {"batch_size": 4, "seed": 7, "collate_fn": collate}
    full = ResumableDataLoader(NoisyDataset(30), **kwargs)  # reference read in-process
    assert isinstance(full, StatefulDataLoader) and isinstance(full.sampler, ResumableSampler)
    reference = epoch_batches(full, 1)
    assert len(reference) == len(full) == 8
    order = torch.cat([b["index"] for b in reference]).tolist()
    assert sorted(order) == list(range(30)) and order != list(range(30))
    assert not same(reference, epoch_batches(full, 2))  # new order and draws per epoch

    kwargs["num_workers"] = workers  # batches do not depend on the number of workers
    torch.manual_seed(123)  # the global RNG does not influence the batches
    first = ResumableDataLoader(NoisyDataset(30), **kwargs)
    head = epoch_batches(first, 1, take=3)
    assert same(head, reference[:3])
    state = first.state_dict()
    main = state["_snapshot"]["_main_snapshot"] if workers else state  # torchdata's layouts
    assert main["_sampler_iter_state"]["sampler_state"] == {
        "yielded": 12,
        "epoch": 1,
        "seed": 7,
        "num_samples": 30,
        "num_replicas": 1,
    }

    dataset = NoisyDataset(30)
    resumed = ResumableDataLoader(dataset, **kwargs)
    resumed.load_state_dict(state)
    iterator = iter(resumed)  # Lightning creates the iterator before it calls set_epoch(1)
    resumed.set_epoch(1)
    tail = list(iterator)
    assert same(tail, reference[3:])
    if workers == 0:  # the skipped samples were never read
        assert sorted(dataset.loaded) == sorted(order[12:])
    assert same(epoch_batches(resumed, 2), epoch_batches(full, 2))  # skip was one-shot

    other = ResumableDataLoader(NoisyDataset(30), **{**kwargs, "num_workers": 2 - workers})
    other.load_state_dict(state)  # saved with another number of workers: same continuation
    iterator = iter(other)
    other.set_epoch(1)
    assert same(list(iterator), reference[3:])


def test_state_of_finished_epoch_or_other_data_does_not_skip(
    recwarn: pytest.WarningsRecorder,
) -> None:
    kwargs: dict[str, Any] = {"batch_size": 4, "seed": 0, "collate_fn": collate}
    reference = epoch_batches(ResumableDataLoader(NoisyDataset(10), **kwargs), 4)
    saver = ResumableDataLoader(NoisyDataset(10), **kwargs)
    epoch_batches(saver, 3, take=2)
    loader = ResumableDataLoader(NoisyDataset(10), num_workers=2, **kwargs)
    loader.load_state_dict(saver.state_dict())
    iterator = iter(loader)  # Lightning creates the iterator, then moves on to epoch 4
    loader.set_epoch(4)
    assert same(list(iterator), reference)

    saver = ResumableDataLoader(NoisyDataset(10), **{**kwargs, "seed": 1})
    epoch_batches(saver, 4, take=2)
    loader = ResumableDataLoader(NoisyDataset(10), **kwargs)
    loader.load_state_dict(saver.state_dict())
    assert same(list(loader), reference)
    assert any("restarts from its first batch" in str(w.message) for w in recwarn.list)

    old_format = {"epoch": 3, "batches": 1, "seed": 0, "num_samples": 10}
    loader.load_state_dict(old_format)  # written before the loader used torchdata
    saver = ResumableDataLoader(NoisyDataset(10), **kwargs)
    assert same(list(loader), epoch_batches(saver, 3)[1:])
    with pytest.raises(ValueError, match="no sampler position"):
        loader.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="sampler"):
        ResumableDataLoader(NoisyDataset(10), sampler=[0, 1])


def test_sampler_shards_cover_the_epoch_once() -> None:
    data = list(range(10))
    shards = [ResumableSampler(data, seed=3, num_replicas=2, rank=r) for r in range(2)]
    orders = []
    for epoch in (5, 6):  # every rank reads its own shard, reshuffled per epoch
        for shard in shards:
            shard.set_epoch(epoch)
        orders.append([[i for i, _ in shard] for shard in shards])
        assert sorted(i for order in orders[-1] for i in order) == data
    assert orders[0] != orders[1]
    for shard in shards:
        shard.set_epoch(5)
    seeds = {i: s for shard in shards for i, s in shard}
    single = ResumableSampler(data, seed=3)
    single.set_epoch(5)
    assert {i: s for i, s in single} == seeds  # augmentation seed depends on (seed, epoch, index)

"""Data order and augmentation that depend only on (seed, epoch, index).

A resumed run, a run on another number of workers and every rank of a distributed run
see exactly the images and augmentations an uninterrupted single-process run would
(per rank shard), because nothing here reads a global random state.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from leapkd.data.labeled import LabeledImages


class EpochSeededSampler(Sampler[tuple[int, int]]):
    """Shuffles with a generator seeded by (seed, epoch); yields (augmentation key, index) pairs.

    Each rank takes every `world_size`-th position of the permutation after dropping the
    tail that does not fill a global batch (so every rank runs the same number of steps);
    with `accumulate` batches per optimizer step, a global batch is that many batches.
    With `repeats` R > 1 (DeiT's repeated augmentation), every image of the permutation
    comes R times in a row, each copy with its own augmentation key, so an epoch covers
    about 1/R of the images in R augmentations each (spread over the ranks); the key is
    the epoch when R is 1.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        accumulate: int = 1,
        repeats: int = 1,
    ) -> None:
        self.size, self.repeats = size, repeats
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None
        global_batch = batch_size * world_size * accumulate
        self.per_rank = (size // global_batch) * batch_size * accumulate
        if self.per_rank == 0:
            raise ValueError(f"{size} training images do not fill one global batch of {global_batch}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """In `epoch`, skip the first `batches_done` batches (already trained on).

        The epoch is set here too: a loader with workers draws its first indices when its
        iterator is created, before the trainer calls `set_epoch`. A finished epoch resumes
        at the start of the next one (where the trainer resumes too).
        """
        if batches_done * self.batch_size >= self.per_rank:
            epoch, batches_done = epoch + 1, 0
        self.epoch = epoch
        self._resume = (epoch, batches_done)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).repeat_interleave(self.repeats)
        # the augmentation key of copy c of an image: epoch * repeats + c (just the epoch without repeats)
        keys = self.epoch * self.repeats + torch.arange(len(order)) % self.repeats
        used = self.per_rank * self.world_size
        mine = list(
            zip(keys[:used][self.rank :: self.world_size].tolist(), order[:used][self.rank :: self.world_size].tolist())
        )
        if self._resume is not None and self._resume[0] == self.epoch:
            mine = mine[self._resume[1] * self.batch_size :]
            self._resume = None
        yield from mine


class SeededItems(Dataset):
    """Wraps a dataset so item (epoch, index) is drawn under a seed made of both.

    Random transforms inside the wrapped dataset use the global generators (torch's; with
    `python_rngs`, Python's and numpy's too, which timm's RandAugment draws from); they are
    seeded per item and restored afterwards, so augmentation does not depend on what ran before.
    """

    def __init__(self, dataset: LabeledImages, seed: int, python_rngs: bool = False) -> None:
        self.dataset = dataset
        self.seed = seed
        self.python_rngs = python_rngs  # also seed Python's and numpy's generators (about 0.1 ms an item)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        epoch, index = key
        item_seed = (self.seed * 1_000_003 + epoch) * 10_000_019 + index
        if not self.python_rngs:
            return self._item(index, item_seed)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            random.seed(item_seed)  # timm's RandAugment draws from Python's and numpy's generators
            np.random.seed(item_seed % 2**32)
            return self._item(index, item_seed)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)

    def _item(self, index: int, item_seed: int) -> tuple[Any, int]:
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue a CUDA seeding call,
            # with a captured stack trace, per item on CUDA builds without a GPU
            torch.default_generator.manual_seed(item_seed)
            return self.dataset[index]


def seeded_loader(
    dataset: LabeledImages,
    seed: int,
    batch_size: int,
    num_workers: int,
    rank: int,
    world_size: int,
    resume_at: dict[str, Any] | None = None,
    pin_memory: bool = False,
    accumulate: int = 1,
    repeats: int = 1,
    python_rngs: bool = False,
) -> DataLoader:
    """The training loader of one rank: seeded order and augmentation, resumable mid-epoch
    (`resume_at`: {"epoch", "batches_done"} of a checkpoint); `pin_memory` for a CUDA device;
    `repeats`: repeated augmentation; `python_rngs`: the transforms draw from Python's and numpy's generators."""
    sampler = EpochSeededSampler(len(dataset), seed, batch_size, rank, world_size, accumulate, repeats)
    if resume_at is not None:
        sampler.resume_at(resume_at["epoch"], resume_at["batches_done"])
    return DataLoader(
        SeededItems(dataset, seed, python_rngs),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        # its workers' base seed from its own generator, not the global one: what a student draws
        # in a step (drop path, dropout) then depends on the seed alone, not on the epochs begun
        generator=torch.Generator().manual_seed(seed),
    )

import torch
from torch.utils.data import Dataset

from leapkd.data.sampling import EpochSeededSampler, SeededItems


def test_order_depends_on_seed_and_epoch_only():
    a = EpochSeededSampler(100, seed=1, batch_size=8)
    b = EpochSeededSampler(100, seed=1, batch_size=8)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    assert len(list(a)) == len(a) == 96  # tail that does not fill a batch is dropped


def test_ranks_split_one_permutation():
    full = EpochSeededSampler(100, seed=0, batch_size=4, rank=0, world_size=1)
    r0 = EpochSeededSampler(100, seed=0, batch_size=4, rank=0, world_size=2)
    r1 = EpochSeededSampler(100, seed=0, batch_size=4, rank=1, world_size=2)
    i0, i1 = [i for _, i in r0], [i for _, i in r1]
    assert len(i0) == len(i1) == 48
    assert not set(i0) & set(i1)
    assert set(i0) | set(i1) <= {i for _, i in full}


def test_resume_skips_batches_already_done():
    s = EpochSeededSampler(64, seed=0, batch_size=8)
    s.set_epoch(2)
    whole = list(s)
    s.resume_at(2, 3)
    assert list(s) == whole[24:]
    assert list(s) == whole  # only once


def test_resume_holds_before_the_trainer_sets_the_epoch():
    """A loader with workers draws indices when its iterator is made, before `set_epoch`."""
    s = EpochSeededSampler(64, seed=0, batch_size=8)
    s.set_epoch(2)
    whole = list(s)
    fresh = EpochSeededSampler(64, seed=0, batch_size=8)
    fresh.resume_at(2, 3)
    assert list(fresh) == whole[24:]
    s.set_epoch(3)
    after_a_finished_epoch = EpochSeededSampler(64, seed=0, batch_size=8)
    after_a_finished_epoch.resume_at(2, 8)  # 8 of 8 batches done: the next epoch, whole
    assert list(after_a_finished_epoch) == list(s)


class Noisy(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.rand(3)


def test_items_are_seeded_by_epoch_and_index():
    ds = SeededItems(Noisy(), seed=5)
    torch.manual_seed(123)
    a = ds[(1, 4)]
    torch.rand(100)  # global state moves on
    assert torch.equal(ds[(1, 4)], a)
    assert not torch.equal(ds[(2, 4)], a)
    assert not torch.equal(ds[(1, 5)], a)

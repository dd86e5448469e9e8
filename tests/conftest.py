"""Shared test settings: deterministic, single-threaded-friendly, no network."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_core_for_auto_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """`num_workers: auto` gives 0 data workers in tests (as on a 1-core machine): hundreds
    of short runs in one process would each fork and start workers. Tests of the loader
    with workers ask for a number, and tests of `auto` patch the core count themselves."""
    from leapkd import hardware

    monkeypatch.setattr(hardware, "cpus_available", lambda: 1)

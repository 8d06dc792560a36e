"""Fixtures for the mechanism tests."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Run each test on one intra-op thread, then restore the previous count.

    On a busy 2-core machine, small reductions on two OpenMP threads (a max over 7 columns,
    for example) were measured to take seconds instead of milliseconds.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

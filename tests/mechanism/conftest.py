"""Fixtures for the mechanism tests."""

from collections.abc import Callable, Iterator

import pytest
import torch

from delsim.mechanism.sampling import PREFIX_BITS, binomial_keys


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


def _boundary_prefixes(trials: torch.Tensor | int, prob: torch.Tensor, max_trials: int, seed: int) -> torch.Tensor:
    keys, upper = binomial_keys(trials, prob, max_trials)
    trials_tensor = torch.as_tensor(trials).expand(prob.shape)
    columns = (torch.rand(prob.shape, generator=torch.Generator().manual_seed(seed)) * trials_tensor).long()
    key = keys.gather(1, columns.clamp(max=max_trials - 1).unsqueeze(1)).squeeze(1)
    # Lower rows compare keys with u, upper rows with 1 - u.
    target = torch.where(upper, 1.0 - key, key)
    prefixes = (target * 2**PREFIX_BITS).floor().clamp(0, 2**PREFIX_BITS - 1).long()
    return torch.where(trials_tensor > 0, prefixes, 0)


@pytest.fixture
def boundary_prefixes() -> Callable[[torch.Tensor | int, torch.Tensor, int, int], torch.Tensor]:
    """Return a function that gives each element a prefix whose 2**-21 interval contains one of its keys.

    The function takes (trials, prob, max_trials, seed). The first pass leaves such
    elements open, except in the rare case that the key is the interval's first uniform.
    Elements with 0 trials get prefix 0.
    """
    return _boundary_prefixes

"""Tests of the nearest-neighbour inversion attack, its success rate and mu calibration."""

from __future__ import annotations

import pytest
import torch

from delsim.mechanism import Projection, attack_success_rate, calibrate_mu, inversion_attack, wilson_interval


def random_table(vocab: int, hidden: int, seed: int) -> torch.Tensor:
    return torch.randn(vocab, hidden, generator=torch.Generator().manual_seed(seed))


def test_attack_exact_without_noise() -> None:
    table = random_table(300, 24, 0)
    ids = torch.randint(0, 300, (7, 11), generator=torch.Generator().manual_seed(1))
    # Scaling keeps the cosine similarity, so scaled embeddings are still recovered.
    recovered = inversion_attack(table[ids] * 3.5, table)
    assert recovered.shape == (7, 11)
    assert recovered.dtype == torch.int64
    assert torch.equal(recovered, ids)
    assert attack_success_rate(recovered, ids) == 1.0


def test_batches_match_unbatched() -> None:
    table = random_table(1000, 16, 2)
    queries = torch.randn(333, 16, generator=torch.Generator().manual_seed(3))
    unbatched = inversion_attack(queries, table, batch_size=1000, token_batch_size=333)
    expected = torch.nn.functional.cosine_similarity(queries.unsqueeze(1), table.unsqueeze(0), dim=2).argmax(1)
    assert torch.equal(unbatched, expected)
    for batch_size, token_batch_size in ((3, 333), (7, 50), (999, 1), (4096, 4096)):
        batched = inversion_attack(queries, table, batch_size=batch_size, token_batch_size=token_batch_size)
        assert torch.equal(batched, unbatched), (batch_size, token_batch_size)


def test_ties_go_to_lowest_id() -> None:
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    queries = torch.tensor([[5.0, 0.0], [0.0, 0.1]])
    for batch_size in (1, 2, 3, 4):
        assert inversion_attack(queries, table, batch_size=batch_size).tolist() == [0, 1]


def test_success_rate_counts_matches() -> None:
    assert attack_success_rate(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 0, 3, 0])) == 0.5
    with pytest.raises(ValueError, match="must equal true_ids shape"):
        attack_success_rate(torch.tensor([1, 2]), torch.tensor([1]))
    with pytest.raises(ValueError, match="at least one token"):
        attack_success_rate(torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64))


def test_attack_rejects_bad_shapes() -> None:
    table = random_table(10, 8, 4)
    with pytest.raises(ValueError, match=r"last dimension must equal the table's D=8"):
        inversion_attack(torch.zeros(3, 5), table)
    with pytest.raises(ValueError, match=r"batch_size must be an integer in >= 1, got 0"):
        inversion_attack(torch.zeros(3, 8), table, batch_size=0)


def test_wilson_interval_known_values() -> None:
    # Reference values from the closed-form Wilson score interval with z = 1.959964.
    low, high = wilson_interval(10, 100)
    assert low == pytest.approx(0.05523, abs=1e-4)
    assert high == pytest.approx(0.17437, abs=1e-4)
    low, high = wilson_interval(0, 50)
    assert low == 0.0
    assert high == pytest.approx(0.07135, abs=1e-4)


@pytest.mark.parametrize(("target", "sparsity"), [(0.3, 1.0), (0.6, 1.0), (0.3, 0.5)])
def test_calibrate_mu_hits_target(target: float, sparsity: float) -> None:
    table = random_table(200, 32, 5)
    projection = Projection.from_pca(table, 16)
    token_ids = torch.randint(0, 200, (400,), generator=torch.Generator().manual_seed(6))
    clip = 1.0

    result = calibrate_mu(
        target, projection=projection, embedding_table=table, token_ids=token_ids, bits=4, clip=clip,
        sparsity=sparsity, seed=0, low=0.1, high=1000.0, tol=0.02,
    )
    assert result.converged
    assert abs(result.asr - target) <= 0.02
    assert result.ci_low <= result.asr <= result.ci_high
    assert result.num_tokens == 400
    assert result.history[-1][0] > 0

    # Re-measuring at the calibrated mu with the same seed gives the reported rate.
    from delsim.mechanism import StochasticQuantizer

    quantizer = StochasticQuantizer(4, result.mu, clip, 16, sparsity)
    coordinates = projection.encode(table[token_ids]).detach().clamp(-clip, clip)
    released = quantizer.privatize(coordinates, generator=torch.Generator().manual_seed(0))
    recovered = inversion_attack(projection.decode(released).detach(), table)
    assert attack_success_rate(recovered, token_ids) == result.asr


def test_calibrate_mu_rejects_unreachable_target() -> None:
    table = random_table(100, 16, 7)
    projection = Projection.from_pca(table, 8)
    token_ids = torch.arange(100)
    with pytest.raises(ValueError, match="outside the rates reached in the bracket"):
        calibrate_mu(0.9, projection=projection, embedding_table=table, token_ids=token_ids, bits=2, clip=1.0, low=0.01, high=0.1)
    with pytest.raises(ValueError, match=r"target_asr must be in \(0, 1\)"):
        calibrate_mu(1.5, projection=projection, embedding_table=table, token_ids=token_ids, bits=2, clip=1.0)

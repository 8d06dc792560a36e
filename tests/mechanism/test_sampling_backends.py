"""Tests that the quantizer's numba kernels and its pure torch path return the same levels."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from delsim.mechanism import StochasticQuantizer, level_sampler, sampling
from delsim.mechanism.sampling import PREFIX_BITS, TABLE_MIN_ELEMENTS, binomial_keys, count_below, load_kernels

pytest.importorskip("numba")

CLIP = 0.05


def pack_words(prefixes: torch.Tensor) -> torch.Tensor:
    """Pack 21-bit prefixes into int64 words, three per word, in the order ``split_words`` reads them."""
    padded = torch.cat([prefixes, prefixes.new_zeros(-len(prefixes) % 3)]).reshape(-1, 3)
    return padded[:, 0] | (padded[:, 1] << PREFIX_BITS) | (padded[:, 2] << 2 * PREFIX_BITS)


def quantizer_pair(bits: int, mu: float, sparsity: float, dim: int = 16) -> dict[str, StochasticQuantizer]:
    return {backend: StochasticQuantizer(bits, mu, CLIP, dim, sparsity, backend=backend) for backend in ("numba", "torch")}


def assert_same_draws(pair: dict[str, StochasticQuantizer], z: torch.Tensor, seed: int) -> None:
    """Assert both backends give equal levels and values and leave their generators in equal states."""
    generators = {backend: torch.Generator().manual_seed(seed) for backend in pair}
    levels = {backend: q.encode(z, generator=generators[backend]) for backend, q in pair.items()}
    values = {backend: q.privatize(z, generator=generators[backend]) for backend, q in pair.items()}
    assert torch.equal(levels["numba"], levels["torch"])
    assert torch.equal(values["numba"], values["torch"])
    assert values["numba"].dtype == torch.float32
    assert torch.equal(generators["numba"].get_state(), generators["torch"].get_state())


@pytest.mark.parametrize(
    ("bits", "sparsity", "mu"),
    [
        (1, 1.0, 10.0),
        (4, 1.0, 10.0),
        (4, 0.5, 10.0),
        (6, 1.0, 4.0),
        (6, 0.3, 2.0),
        # A just above clip: plus probabilities reach about 2e-8 and 1 - 2e-8 (6e-6 for the sparse case).
        (4, 1.0, 1e5),
        (3, 0.9, 63.49),
    ],
)
def test_backends_agree_before_and_after_table(bits: int, sparsity: float, mu: float) -> None:
    pair = quantizer_pair(bits, mu, sparsity)
    for step, rows in enumerate((64, TABLE_MIN_ELEMENTS // 16, 3000)):
        z = torch.randn(rows, 16, generator=torch.Generator().manual_seed(rows)) * CLIP * 1.5
        assert_same_draws(pair, z, seed=step)
    assert pair["numba"]._sampler.plus_sampler._table is not None


@pytest.mark.parametrize("sparsity", [1.0, 0.5])
@pytest.mark.parametrize("warm", [False, True])
def test_backends_agree_on_open_coordinates(
    monkeypatch: pytest.MonkeyPatch, boundary_prefixes: Callable[..., torch.Tensor], sparsity: float, warm: bool
) -> None:
    # Prefixes chosen on CDF values leave about 500 coordinates open, more than the kernel's
    # list can take, so both the second pass and the kernel's rerun take part.
    pair = quantizer_pair(4, 10.0, sparsity)
    if warm:
        for q in pair.values():
            q.encode(torch.zeros(TABLE_MIN_ELEMENTS // 16, 16), generator=torch.Generator().manual_seed(0))
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(10)) * CLIP
    prob = pair["torch"]._sampler.plus_prob(z).reshape(-1)
    rounds = pair["torch"].rounds
    random_prefixes = torch.randint(0, 2**PREFIX_BITS, (2 * prob.numel(),), generator=torch.Generator().manual_seed(11))

    if sparsity == 1.0:
        even = torch.arange(prob.numel()) % 2 == 0
        prefixes = torch.where(even, boundary_prefixes(rounds, prob, rounds, seed=12), random_prefixes[: prob.numel()])
    else:
        nonzero_prob = torch.full_like(prob, sparsity)
        nonzero_prefixes = torch.where(
            torch.arange(prob.numel()) % 4 == 0, boundary_prefixes(rounds, nonzero_prob, rounds, seed=13), random_prefixes[0::2]
        )
        nonzero = pair["torch"]._sampler.nonzero_sampler.first_pass(nonzero_prob, None, nonzero_prefixes, None)
        plus_prefixes = torch.where(
            (torch.arange(prob.numel()) % 4 == 1) & (nonzero >= 0),
            boundary_prefixes(nonzero.clamp(min=0), prob, rounds, seed=14),
            random_prefixes[1::2],
        )
        prefixes = torch.stack([nonzero_prefixes, plus_prefixes], dim=1).reshape(-1)

    words = pack_words(prefixes)
    monkeypatch.setattr(level_sampler, "draw_words", lambda count, generator, device: words.clone())
    monkeypatch.setattr(sampling, "draw_words", lambda count, generator, device: words.clone())
    assert_same_draws(pair, z, seed=15)

    # With the words replaced, the generator only draws extensions: one or two per open coordinate.
    generator = torch.Generator().manual_seed(16)
    pair["torch"].encode(z, generator=generator)
    open_count = _draws_since(16, generator) // (1 if sparsity == 1.0 else 2)
    assert open_count > level_sampler.OPEN_CAPACITY


def _draws_since(seed: int, generator: torch.Generator) -> int:
    """Return how many int64 values ``generator`` drew since it was seeded with ``seed``."""
    replay = torch.Generator().manual_seed(seed)
    for count in range(100000):
        if torch.equal(replay.get_state(), generator.get_state()):
            return count
        torch.empty(1, dtype=torch.int64).random_(generator=replay)
    raise AssertionError("generator drew more than 100,000 values")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_backends_agree_on_input_dtypes(dtype: torch.dtype) -> None:
    pair = quantizer_pair(4, 10.0, 1.0)
    z = (torch.randn(50, 16, generator=torch.Generator().manual_seed(17)) * CLIP).to(dtype)
    assert_same_draws(pair, z, seed=18)


def test_backends_agree_on_empty_and_shaped_input() -> None:
    for sparsity in (1.0, 0.5):
        pair = quantizer_pair(4, 10.0, sparsity)
        assert_same_draws(pair, torch.zeros(0, 16), seed=19)
        z = torch.randn(2, 3, 5, 16, generator=torch.Generator().manual_seed(20)) * CLIP
        assert_same_draws(pair, z, seed=21)
        flat = pair["numba"].encode(z.reshape(-1, 16), generator=torch.Generator().manual_seed(22))
        shaped = pair["numba"].encode(z, generator=torch.Generator().manual_seed(22))
        assert torch.equal(shaped.reshape(-1, 16), flat)


def test_nan_rejected_before_drawing() -> None:
    z = torch.zeros(4, 16)
    z[2, 3] = math.nan
    for backend, q in quantizer_pair(4, 10.0, 0.5).items():
        generator = torch.Generator().manual_seed(23)
        with pytest.raises(ValueError, match="z contains NaN values"):
            q.privatize(z, generator=generator)
        assert torch.equal(generator.get_state(), torch.Generator().manual_seed(23).get_state()), backend


def test_auto_backend_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    z = torch.randn(30, 16, generator=torch.Generator().manual_seed(24)) * CLIP
    with_numba = StochasticQuantizer(4, 10.0, CLIP, 16).encode(z, generator=torch.Generator().manual_seed(25))

    monkeypatch.setattr(sampling, "load_kernels", lambda: None)
    without_numba = StochasticQuantizer(4, 10.0, CLIP, 16).encode(z, generator=torch.Generator().manual_seed(25))
    assert torch.equal(with_numba, without_numba)
    with pytest.raises(ValueError, match="backend='numba' needs the numba package"):
        StochasticQuantizer(4, 10.0, CLIP, 16, backend="numba")


def test_load_kernels_reports_missing_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError("No module named 'numba'", name="numba")

    monkeypatch.setattr(sampling.importlib, "import_module", missing)
    assert load_kernels.__wrapped__() is None

    def broken(name: str) -> None:
        raise ModuleNotFoundError("No module named 'llvmlite'", name="llvmlite")

    monkeypatch.setattr(sampling.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="llvmlite"):
        load_kernels.__wrapped__()


def test_invalid_backend_raises() -> None:
    with pytest.raises(ValueError, match=r"backend must be one of auto, numba, torch, got 'cuda'"):
        StochasticQuantizer(4, 10.0, CLIP, 16, backend="cuda")


@pytest.mark.parametrize("trials", [1, 7, 15, 63])
def test_kernel_keys_match_torch_bit_for_bit(trials: int) -> None:
    # Probing each key and its neighbouring doubles finds any key that differs by one ulp.
    kernels = load_kernels()
    probs = torch.cat([torch.rand(300, dtype=torch.float64, generator=torch.Generator().manual_seed(trials)),
                       torch.tensor([0.0, 1e-300, 1e-9, 0.5, 1 - 1e-9, 1.0], dtype=torch.float64)])
    keys, upper = binomial_keys(trials, probs, trials)
    targets = torch.where(upper.unsqueeze(1), 1.0 - keys, keys)
    uniforms = torch.cat([targets, torch.nextafter(targets, torch.zeros(())), torch.nextafter(targets, torch.ones(()))], dim=1)
    uniforms = uniforms.clamp(0.0, 1.0 - 2**-53)
    expected = count_below(keys, upper, trials, uniforms)
    for row, prob in enumerate(probs.tolist()):
        counts = [kernels._walk(trials, prob, uniform, uniform) for uniform in uniforms[row].tolist()]
        assert counts == expected[row].tolist(), f"q={prob}"


def test_kernel_constants_match_sampling() -> None:
    kernels = load_kernels()
    for name in ("PREFIX_BITS", "PREFIXES_PER_WORD", "EXTENSION_BITS", "PREFIX_MASK", "EXTENSION_MASK", "UNIFORM_SCALE"):
        assert getattr(kernels, name) == getattr(sampling, name), name

"""Cost models that turn work into virtual time: client compute and server batches.

Server timing follows the usual roofline view of transformer inference: a prefill iteration is
compute bound (2 FLOPs per parameter per token), a decode iteration is bound by the larger of
its FLOPs and the bytes of weights plus KV cache it reads from memory.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AcceleratorProfile:
    """Peak rates of one server accelerator.

    Attributes
    ----------
    name:
        Accelerator name, for example ``a100``.
    peak_flops:
        Peak dense FLOP/s at the serving precision.
    memory_bandwidth_bytes_per_s:
        Peak memory bandwidth in bytes per second.
    flops_efficiency:
        Fraction of peak FLOP/s reached in practice (model FLOPs utilisation).
    bandwidth_efficiency:
        Fraction of peak memory bandwidth reached in practice.
    """

    name: str
    peak_flops: float
    memory_bandwidth_bytes_per_s: float
    flops_efficiency: float = 0.5
    bandwidth_efficiency: float = 0.7


ACCELERATORS: dict[str, AcceleratorProfile] = {
    # Vendor datasheet dense BF16 peaks and HBM bandwidths.
    "a100": AcceleratorProfile("a100", 312e12, 2.0e12),
    "h100": AcceleratorProfile("h100", 989e12, 3.35e12),
    "h200": AcceleratorProfile("h200", 989e12, 4.8e12),
    "l4": AcceleratorProfile("l4", 121e12, 0.3e12),
    # NOTE: a rough figure for a multi-core server CPU running fp32 matmuls.
    "cpu": AcceleratorProfile("cpu", 1.0e12, 0.1e12, flops_efficiency=0.3, bandwidth_efficiency=0.5),
}
"""Built-in accelerator profiles by name."""


@dataclass(frozen=True)
class ModelShape:
    """Size figures of the served LLM that the cost model needs.

    Attributes
    ----------
    parameters:
        Number of parameters.
    num_layers:
        Transformer layers.
    hidden_size:
        Hidden size D.
    bytes_per_parameter:
        Bytes per weight at the serving precision (2 for bf16).
    """

    parameters: float
    num_layers: int
    hidden_size: int
    bytes_per_parameter: float = 2.0

    @property
    def kv_bytes_per_token(self) -> float:
        """Bytes of key and value cache one context token occupies."""
        return 2.0 * self.num_layers * self.hidden_size * self.bytes_per_parameter


@dataclass(frozen=True)
class ServerCostModel:
    """Virtual time of prefill and decode iterations on one replica."""

    model: ModelShape
    accelerator: AcceleratorProfile
    iteration_overhead_s: float = 0.0

    def _compute_time_s(self, tokens: float) -> float:
        flops = 2.0 * self.model.parameters * tokens
        return flops / (self.accelerator.peak_flops * self.accelerator.flops_efficiency)

    def _memory_time_s(self, num_bytes: float) -> float:
        bandwidth = self.accelerator.memory_bandwidth_bytes_per_s * self.accelerator.bandwidth_efficiency
        return num_bytes / bandwidth

    def prefill_time_s(self, tokens: int) -> float:
        """Return the seconds to prefill ``tokens`` prompt tokens in one iteration."""
        weight_bytes = self.model.parameters * self.model.bytes_per_parameter
        return self.iteration_overhead_s + max(self._compute_time_s(tokens), self._memory_time_s(weight_bytes))

    def decode_time_s(self, batch_size: int, context_tokens: int) -> float:
        """Return the seconds of one decode iteration.

        Parameters
        ----------
        batch_size:
            Sequences that each produce one token in this iteration.
        context_tokens:
            Sum over those sequences of the tokens already in their KV cache.
        """
        weight_bytes = self.model.parameters * self.model.bytes_per_parameter
        kv_bytes = context_tokens * self.model.kv_bytes_per_token
        return self.iteration_overhead_s + max(
            self._compute_time_s(batch_size), self._memory_time_s(weight_bytes + kv_bytes)
        )


@dataclass(frozen=True)
class ClientCostModel:
    """Client-side work of DEL per prompt token, in FLOPs.

    The client looks up the embedding (no FLOPs), projects it with a d x D matrix (2 D d FLOPs)
    and clips, privatizes and packs d coordinates (a small constant number of operations each).
    """

    hidden_size: int
    dim: int
    ops_per_coordinate: float = 16.0

    def flops(self, tokens: int) -> float:
        """Return the FLOPs the client spends to encode ``tokens`` prompt tokens."""
        per_token = 2.0 * self.hidden_size * self.dim + self.ops_per_coordinate * self.dim
        return per_token * tokens

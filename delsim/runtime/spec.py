"""Plain settings handed to the Ray actors: what to load and how to run the mechanism."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MechanismSpec:
    """DEL mechanism settings shared by the client shards and the server replicas."""

    dim: int
    bits: int
    mu: float
    clip: float
    sparsity: float


@dataclass(frozen=True)
class ModelSpec:
    """Where the model and its DEL artifacts come from, and how the server runs them."""

    model: str
    projection_path: str
    soft_prompt_dir: str | None
    dtype: str
    missing_soft_prompt: str
    max_new_tokens: int
    top_p: float
    temperature: float
    reference_tokens: int
    perplexity: bool
    coherence: bool


@dataclass(frozen=True)
class ClientJob:
    """One prompt to encode on a client shard. The shard tokenizes, embeds and privatizes it."""

    request_id: int
    client_id: int
    prompt: str
    quantizer_seed: int


@dataclass(frozen=True)
class ClientResult:
    """The packed payload a client sends, and what it cost."""

    request_id: int
    payload: bytes
    prompt_tokens: int
    encode_wall_s: float


@dataclass(frozen=True)
class ServerJob:
    """One payload for a server replica.

    ``reference`` is the evaluation continuation, used only to score utility; the server never
    receives the prompt's text, token ids or raw embeddings.
    """

    request_id: int
    payload: bytes
    generation_seed: int
    run_llm: bool
    reference: str | None


@dataclass(frozen=True)
class ServerResult:
    """What a server replica computed for one payload.

    ``status`` is completed, rejected (no soft prompt and the scenario rejects such requests)
    or failed (``error`` contains the cause). ``real_compute`` is false for timing-only requests, whose
    generation length is assumed to be the maximum.
    """

    request_id: int
    status: str
    error: str | None = None
    downlink: bytes = b""
    generated_tokens: int = 0
    generated_text: str = ""
    soft_prompt: str | None = None
    soft_prompt_tokens: int = 0
    nll_sum: float = float("nan")
    nll_tokens: int = 0
    coherence: float = float("nan")
    real_compute: bool = False
    server_wall_s: float = 0.0

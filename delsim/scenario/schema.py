"""The scenario file schema: every section, field, unit and allowed range.

Each field carries a description that doubles as the fix shown when a value is rejected.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """Base of every scenario section: unknown keys are errors, values are checked on assignment.

    Infinite and NaN numbers are rejected everywhere: YAML's ``.inf`` and ``.nan`` are never a
    meaningful bandwidth, rate, budget or duration.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSection(Section):
    """The served LLM and its DEL artifacts."""

    name: str = Field("delsim-default", description="'delsim-default' for the embedded model, a Hugging Face model name, or a local model folder")
    projection: str = Field("default", description="'default' for the shipped DEL projection, or a path to a projection .safetensors file")
    soft_prompts: str = Field("default", description="'default' for the shipped soft-prompt library, 'none', or a path to a soft-prompt library folder")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="weight dtype on the server replicas: auto, float32, bfloat16 or float16")


class MechanismSection(Section):
    """DEL mechanism settings applied by every client."""

    dim: int = Field(32, ge=1, le=65536, description="projected size d; must match the projection's output size")
    bits: int = Field(4, ge=1, le=16, description="bits n per coordinate, an integer from 1 to 16")
    mu: float = Field(..., gt=0, description="GDP parameter mu of one token, a positive number")
    clip: float | Literal["default"] = Field("default", description="clip bound c of projected coordinates, a positive number, or 'default' for the projection's stored value")
    sparsity: float = Field(1.0, gt=0, le=1, description="sparsity p in (0, 1]; 1 keeps every coordinate")
    missing_soft_prompt: Literal["run_without", "reject"] = Field("run_without", description="what the server does when no soft prompt matches the privacy configuration: run_without or reject")

    @model_validator(mode="after")
    def _check_clip(self) -> "MechanismSection":
        if isinstance(self.clip, float) and self.clip <= 0:
            raise ValueError(f"mechanism.clip must be > 0 or 'default', got {self.clip}")
        return self


class DeviceClassSection(Section):
    """One class of edge device and its share of the fleet."""

    name: str = Field(..., min_length=1, description="device class name, for example 'phone'")
    share: float = Field(..., gt=0, description="relative share of clients in this class, a positive number")
    uplink_bps: float = Field(..., gt=0, description="uplink bandwidth in bits per second, a positive number such as 5.0e6")
    downlink_bps: float = Field(..., gt=0, description="downlink bandwidth in bits per second, a positive number such as 2.0e7")
    rtt_s: float = Field(..., ge=0, description="round-trip time in seconds, zero or positive")
    flops_per_s: float = Field(..., gt=0, description="sustained device compute speed in FLOP/s, a positive number such as 5.0e9")
    availability: float = Field(1.0, gt=0, le=1, description="fraction of time the device is online, in (0, 1]")
    mean_online_s: float = Field(600.0, gt=0, description="mean length of an online period in seconds")
    energy_per_flop_j: float = Field(0.0, ge=0, description="compute energy in joules per FLOP, zero or positive")
    radio_energy_per_byte_j: float = Field(0.0, ge=0, description="radio energy in joules per byte, zero or positive")


class FleetSection(Section):
    """The client fleet."""

    clients: int = Field(..., ge=1, le=10_000_000, description="number of simulated clients, a positive integer")
    device_classes: list[DeviceClassSection] = Field(..., min_length=1, description="a non-empty list of device classes")

    @model_validator(mode="after")
    def _unique_names(self) -> "FleetSection":
        names = [d.name for d in self.device_classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"device class names must be unique; repeated: {duplicates}")
        return self


class ArrivalSection(Section):
    """Arrival process of requests per client."""

    process: Literal["poisson", "fixed"] = Field("poisson", description="arrival process: 'poisson' or 'fixed'")
    rate_hz: float | None = Field(None, gt=0, description="Poisson requests per second per online client, a positive number")
    requests_per_client: int | None = Field(None, ge=1, description="requests each client sends under the 'fixed' process, a positive integer")

    @model_validator(mode="after")
    def _check_parameters(self) -> "ArrivalSection":
        if self.process == "poisson" and self.rate_hz is None:
            raise ValueError("process 'poisson' needs rate_hz (requests per second per client)")
        if self.process == "fixed" and self.requests_per_client is None:
            raise ValueError("process 'fixed' needs requests_per_client")
        return self


class WorkloadSection(Section):
    """Requests: arrivals, prompts and generation settings."""

    duration_s: float = Field(..., gt=0, description="length of the arrival window in virtual seconds")
    arrival: ArrivalSection = Field(default_factory=ArrivalSection, description="the arrival process")
    dataset: str = Field("default", description="'default' for the shipped held-out corpus, 'wikitext2', 'ptb', 'cnn_dailymail', or a local .txt path")
    prompt_words: int = Field(50, ge=1, description="words of each paragraph used as the prompt")
    min_words: int = Field(100, ge=2, description="minimum words of a paragraph to be used")
    max_prompts: int | None = Field(None, ge=1, description="use at most this many prompts of the dataset")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="maximum generated tokens per request")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling threshold in (0, 1]")
    temperature: float = Field(0.7, gt=0, description="sampling temperature, a positive number")

    @model_validator(mode="after")
    def _check_words(self) -> "WorkloadSection":
        if self.prompt_words >= self.min_words:
            raise ValueError(
                f"prompt_words ({self.prompt_words}) must be smaller than min_words ({self.min_words}) so that a reference continuation remains"
            )
        return self


class TimingModelSection(Section):
    """Size of the LLM the server cost model times, when it differs from the model actually run."""

    parameters: float = Field(..., gt=0, description="parameter count of the timed model, such as 7.0e9")
    num_layers: int = Field(..., ge=1, description="transformer layers of the timed model")
    hidden_size: int = Field(..., ge=1, description="hidden size of the timed model")
    bytes_per_parameter: float = Field(2.0, gt=0, description="bytes per weight at the serving precision")


class ServersSection(Section):
    """The GPU server pool and its scheduling."""

    replicas: int = Field(..., ge=1, le=100_000, description="number of virtual server replicas")
    accelerator: Literal["a100", "h100", "h200", "l4", "cpu"] = Field("a100", description="accelerator profile of each replica: a100, h100, h200, l4 or cpu")
    dispatch: Literal["round_robin", "least_loaded", "random"] = Field("least_loaded", description="dispatch policy: round_robin, least_loaded or random")
    batching: Literal["static", "continuous"] = Field("continuous", description="batching policy: static or continuous")
    max_batch_size: int = Field(16, ge=1, description="maximum requests in a replica's batch")
    max_prefill_tokens: int = Field(8192, ge=1, description="token budget of one prefill iteration")
    soft_prompt_prefix_cache: bool = Field(False, description="reuse the KV cache of the soft prompt so prefill skips its m tokens")
    iteration_overhead_s: float = Field(0.0, ge=0, description="fixed scheduler and launch overhead of each iteration in seconds")
    timing_model: TimingModelSection | None = Field(None, description="time the server as this model size instead of the model actually run")
    gpu: Literal["auto", "never", "required"] = Field("auto", description="GPU use of the real server actors: auto (use one if the cluster has one), never, or required")


class BudgetSection(Section):
    """Per-user privacy budget."""

    epsilon: float = Field(..., gt=0, description="epsilon of the per-user budget, a positive number")
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of the per-user budget, in (0, 1)")


class PrivacySection(Section):
    """Accounting and budgets."""

    accountant: Literal["prv", "rdp"] = Field("prv", description="Opacus accountant for reported epsilon: prv or rdp")
    unit: Literal["token", "query", "user"] = Field("user", description="accounting unit: token, query or user")
    delta: float = Field(1e-5, gt=0, lt=1, description="delta at which epsilon is reported, in (0, 1)")
    budget: BudgetSection | None = Field(None, description="per-user budget; omit for no enforcement")
    on_exhausted: Literal["reject", "defer"] = Field("reject", description="what happens to a request over budget: reject or defer")
    renewal_period_s: float | None = Field(None, gt=0, description="budget renewal period in virtual seconds, needed by on_exhausted 'defer'")
    exact: bool = Field(True, description="also report the exact epsilon of the quantizer beside the GDP figure")

    @model_validator(mode="after")
    def _check_defer(self) -> "PrivacySection":
        if self.on_exhausted == "defer" and self.renewal_period_s is None:
            raise ValueError("on_exhausted 'defer' needs renewal_period_s (seconds after which budgets renew)")
        return self


class FidelitySection(Section):
    """Share of requests that run through real compute on the server, and the utility metrics computed."""

    real_fraction: float = Field(1.0, ge=0, le=1, description="fraction of requests whose server side runs the real LLM, in [0, 1]")
    perplexity: bool = Field(True, description="compute the perplexity of the reference continuation for real requests")
    coherence: bool = Field(False, description="compute COH (sentence-embedding cosine) for real requests")


class RuntimeSection(Section):
    """Ray actors that do the real compute."""

    client_shards: int = Field(1, ge=1, le=1024, description="client-shard actors; each runs many simulated clients")
    server_actors: int = Field(1, ge=1, le=1024, description="server-replica actors that run the real LLM")
    cpus_per_actor: float = Field(0.5, gt=0, description="CPUs Ray reserves for each actor")
    requests_per_call: int = Field(8, ge=1, description="requests sent to an actor in one call")


class OutputsSection(Section):
    """Run outputs."""

    format: Literal["parquet", "csv"] = Field("parquet", description="table format: parquet or csv")
    keep_text: bool = Field(True, description="store prompts, references and generated text in requests tables")


class Scenario(Section):
    """A complete scenario file."""

    name: str = Field(..., min_length=1, description="scenario name")
    seed: int = Field(0, ge=0, description="seed of every random stream in the run, a non-negative integer")
    model: ModelSection = Field(default_factory=ModelSection, description="the served model")
    mechanism: MechanismSection = Field(..., description="DEL mechanism settings")
    fleet: FleetSection = Field(..., description="the client fleet")
    workload: WorkloadSection = Field(..., description="the request workload")
    servers: ServersSection = Field(..., description="the server pool")
    privacy: PrivacySection = Field(default_factory=PrivacySection, description="privacy accounting")
    fidelity: FidelitySection = Field(default_factory=FidelitySection, description="real-compute fidelity")
    runtime: RuntimeSection = Field(default_factory=RuntimeSection, description="Ray actors")
    outputs: OutputsSection = Field(default_factory=OutputsSection, description="outputs")


class SweptScenario(Scenario):
    """A scenario file with an optional grid of values to sweep.

    ``sweep`` maps a dotted field path (for example ``mechanism.mu``) to a list of values; the
    run covers every combination, one sub-run per point.
    """

    sweep: dict[str, list] | None = Field(None, description="map of dotted field paths to lists of values, such as {'mechanism.mu': [0.5, 1.0]}")

"""Server-replica actor: decodes DEL payloads and runs the frozen LLM with a soft prompt.

The replica's only request input is the packed payload (plus, for scoring, the reference
continuation); ``process`` rejects anything that is not ``bytes``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import ray
import torch

from delsim.llm import CoherenceScorer, LanguageModel, SoftPromptLibrary
from delsim.mechanism import Projection, decode_from_payload
from delsim.runtime.downlink import pack_token_ids
from delsim.runtime.spec import MechanismSpec, ModelSpec, ServerJob, ServerResult

logger = logging.getLogger(__name__)


class ServerReplica:
    """Hosts the LLM, the DEL decoder and the soft-prompt library."""

    def __init__(self, replica_id: int, model: ModelSpec, mechanism: MechanismSpec, device: str = "cpu") -> None:
        torch.set_num_threads(1)
        self.replica_id = replica_id
        self.spec = model
        self.lm = LanguageModel.load(model.model, device=device, dtype=model.dtype)
        # Payloads are decoded in float32 on the CPU, then moved to the LLM's device and dtype.
        self.projection = Projection.load(model.projection_path).eval()
        self.library = SoftPromptLibrary(model.soft_prompt_dir) if model.soft_prompt_dir else None
        self.privacy_config = {"dim": mechanism.dim, "bits": mechanism.bits, "mu": mechanism.mu, "clip": mechanism.clip, "sparsity": mechanism.sparsity}
        self.soft_prompt_key = SoftPromptLibrary.key_of(self.privacy_config)
        self.soft_prompt = self.library.get(self.privacy_config) if self.library is not None else None
        if self.soft_prompt is not None:
            self.soft_prompt = self.soft_prompt.to(self.lm.device, self.lm.dtype)
        self.scorer = CoherenceScorer() if model.coherence else None
        logger.info(
            "server replica %d ready on %s (soft prompt %s: %s)",
            replica_id, device, self.soft_prompt_key, "found" if self.soft_prompt is not None else "missing",
        )

    def model_shape(self) -> dict:
        """Return the size figures of the loaded LLM that the server cost model needs."""
        return {
            "parameters": float(self.lm.num_parameters),
            "num_layers": int(self.lm.num_layers),
            "hidden_size": int(self.lm.hidden_size),
            # The virtual accelerators serve in bf16, whatever dtype this replica computes in.
            "bytes_per_parameter": 2.0,
        }

    def process(self, jobs: list[ServerJob]) -> list[ServerResult]:
        """Decode and serve each job; a failure marks that job failed and is logged, never dropped."""
        results = []
        for job in jobs:
            if not isinstance(job.payload, bytes):
                raise TypeError(f"server replica accepts only packed payloads (bytes), got {type(job.payload).__name__}")
            started = time.perf_counter()
            try:
                result = self._serve(job)
            except Exception as error:  # noqa: BLE001 - one bad payload must not lose the batch
                logger.exception("replica %d failed on request %d", self.replica_id, job.request_id)
                result = ServerResult(job.request_id, "failed", error=f"{type(error).__name__}: {error}")
            results.append(replace(result, server_wall_s=time.perf_counter() - started))
        return results

    def _serve(self, job: ServerJob) -> ServerResult:
        if self.soft_prompt is None and self.spec.missing_soft_prompt == "reject" and self.library is not None:
            reason = f"no soft prompt for privacy configuration {self.soft_prompt_key}"
            return ServerResult(job.request_id, "rejected", error=reason)

        with torch.no_grad():
            embeds = decode_from_payload(job.payload, self.projection).to(self.lm.device, self.lm.dtype)
        soft_tokens = 0 if self.soft_prompt is None else int(self.soft_prompt.shape[0])
        soft_name = self.soft_prompt_key if self.soft_prompt is not None else None

        if not job.run_llm:
            # Timing-only request: the simulation assumes the full generation length.
            placeholder = [0] * self.spec.max_new_tokens
            downlink = pack_token_ids(placeholder, self.lm.vocab_size)
            return ServerResult(
                job.request_id, "completed", downlink=downlink, generated_tokens=self.spec.max_new_tokens,
                soft_prompt=soft_name, soft_prompt_tokens=soft_tokens,
            )

        generated = self.lm.generate(
            embeds,
            soft_prompt=self.soft_prompt,
            max_new_tokens=self.spec.max_new_tokens,
            top_p=self.spec.top_p,
            temperature=self.spec.temperature,
            seed=job.generation_seed,
        )
        text = self.lm.detokenize(generated)
        nll_sum, nll_tokens = float("nan"), 0
        if self.spec.perplexity and job.reference:
            nll_sum, nll_tokens = self._reference_nll(embeds, job.reference, soft_tokens)
        coherence = float("nan")
        if self.scorer is not None and job.reference:
            coherence = float(self.scorer.score([text], [job.reference])[0])
        downlink = pack_token_ids(generated, self.lm.vocab_size)
        return ServerResult(
            job.request_id, "completed", downlink=downlink, generated_tokens=len(generated), generated_text=text,
            soft_prompt=soft_name, soft_prompt_tokens=soft_tokens, nll_sum=nll_sum, nll_tokens=nll_tokens,
            coherence=coherence, real_compute=True,
        )

    def _reference_nll(self, embeds: torch.Tensor, reference: str, soft_tokens: int) -> tuple[float, int]:
        # The reference continues the prompt after a space, and byte-level BPE tokens carry it.
        reference_ids = self.lm.tokenize(" " + reference)[: self.spec.reference_tokens]
        limit = self.lm.max_positions
        if limit is not None:
            room = limit - embeds.shape[0] - soft_tokens
            reference_ids = reference_ids[: max(room, 0)]
        if len(reference_ids) == 0:
            return float("nan"), 0
        nll_sum, tokens = self.lm.continuation_nll(embeds, reference_ids, soft_prompt=self.soft_prompt)
        return float(nll_sum), int(tokens)


ServerReplicaActor = ray.remote(ServerReplica)

"""Client-shard actor: runs the client side of DEL for many simulated clients.

A shard keeps what a DEL client keeps: the LLM's input embedding table, the tokenizer and the
encoder, and nothing else of the LLM. Each request's quantizer draws from its own generator, so a
payload does not depend on which shard encodes it.
"""

from __future__ import annotations

import logging
import time

import ray
import torch

from delsim.llm import LanguageModel
from delsim.mechanism import Projection, StochasticQuantizer, encode_to_payload
from delsim.runtime.spec import ClientJob, ClientResult, MechanismSpec, ModelSpec

logger = logging.getLogger(__name__)


class ClientShard:
    """Encodes prompts into packed DEL payloads."""

    def __init__(self, shard_id: int, model: ModelSpec, mechanism: MechanismSpec) -> None:
        # Each actor computes on one thread so that actors share the machine's cores fairly.
        torch.set_num_threads(1)
        self.shard_id = shard_id

        language_model = LanguageModel.load(model.model, device="cpu")
        self.tokenizer = language_model.tokenizer
        self.embedding_table = language_model.embedding_table.detach().to(torch.float32).clone()
        # NOTE: the whole model is loaded to read its embedding table and then released. A very
        # large model needs a loader that reads only the embedding weights.
        del language_model

        self.projection = Projection.load(model.projection_path).eval()
        self.quantizer = StochasticQuantizer(
            bits=mechanism.bits, mu=mechanism.mu, clip=mechanism.clip, dim=mechanism.dim, sparsity=mechanism.sparsity
        )
        logger.info("client shard %d ready (vocabulary %d, d=%d, n=%d)", shard_id, self.embedding_table.shape[0], mechanism.dim, mechanism.bits)

    def encode(self, jobs: list[ClientJob]) -> list[ClientResult]:
        """Tokenize, embed, project, privatize and pack each job's prompt."""
        results = []
        for job in jobs:
            started = time.perf_counter()
            token_ids = self.tokenizer(job.prompt, add_special_tokens=False)["input_ids"]
            embeddings = self.embedding_table[torch.as_tensor(token_ids, dtype=torch.long)]
            generator = torch.Generator().manual_seed(job.quantizer_seed)
            with torch.no_grad():
                payload = encode_to_payload(embeddings, self.projection, self.quantizer, generator=generator)
            results.append(ClientResult(job.request_id, payload, len(token_ids), time.perf_counter() - started))
        return results


ClientShardActor = ray.remote(ClientShard)

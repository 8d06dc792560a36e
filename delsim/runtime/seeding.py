"""Per-request random streams derived from the run seed.

Every stream depends only on the run seed, a purpose tag and the request id, so results do not
change with the number of actors, their order of completion or how requests are batched.
"""

from __future__ import annotations

import numpy as np

PROMPT_STREAM = 1
QUANTIZER_STREAM = 2
GENERATION_STREAM = 3
FIDELITY_STREAM = 4


def derive_seed(seed: int, stream: int, request_id: int) -> int:
    """Return a 63-bit seed for one purpose of one request."""
    state = np.random.SeedSequence([seed, stream, request_id]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)

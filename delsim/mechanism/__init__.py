"""The DEL method: projection, DP stochastic quantizer, baselines, wire format and inversion attack (pure torch)."""

from delsim.mechanism.attack import attack_success_rate, inversion_attack, wilson_interval
from delsim.mechanism.calibration import CalibrationResult, calibrate_mu
from delsim.mechanism.gaussian import GaussianMechanism
from delsim.mechanism.levels import levels_to_values
from delsim.mechanism.payload import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    Payload,
    PayloadError,
    decode_payload,
    pack_payload,
    payload_size,
    unpack_payload,
)
from delsim.mechanism.pipeline import decode_from_payload, encode_to_payload
from delsim.mechanism.projection import Projection
from delsim.mechanism.quantizer import MAX_BITS, StochasticQuantizer

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_BITS",
    "CalibrationResult",
    "GaussianMechanism",
    "Payload",
    "PayloadError",
    "Projection",
    "StochasticQuantizer",
    "attack_success_rate",
    "calibrate_mu",
    "decode_from_payload",
    "decode_payload",
    "encode_to_payload",
    "inversion_attack",
    "levels_to_values",
    "pack_payload",
    "payload_size",
    "unpack_payload",
    "wilson_interval",
]

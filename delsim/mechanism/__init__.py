"""The DEL method: projection, DP stochastic quantizer, baselines, wire format and inversion attack (pure torch)."""

"""Discrete-event simulation in virtual time: fleet, network, cost models, arrivals, schedulers and metrics."""

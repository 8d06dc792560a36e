"""Scenario files: the YAML schema, validation and sweeps."""

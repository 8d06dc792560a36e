"""Locations of the embedded default model, its DEL projection, soft prompts and corpus.

Everything here ships inside the package, so the default scenario runs with no network.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
"""Folder of the shipped artifacts."""

DEFAULT_MODEL_DIR = DEFAULT_DIR / "model"
"""Hugging Face causal LM and tokenizer, loadable with ``from_pretrained``."""

DEFAULT_PROJECTION_PATH = DEFAULT_DIR / "projection.safetensors"
"""Trained DEL encoder and decoder for the default model."""

DEFAULT_SOFT_PROMPT_DIR = DEFAULT_DIR / "soft_prompts"
"""Soft-prompt library for the default model, keyed by privacy configuration."""

DEFAULT_CORPUS_DIR = DEFAULT_DIR / "corpus"
"""Held-out paragraphs of the training corpus, used for prompts and evaluation."""

DEFAULT_MODEL_NAME = "delsim-default"
"""Name a scenario uses to select the embedded default model."""

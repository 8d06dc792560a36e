"""Fixtures of the llm tests: a tiny random GPT-2 with a byte-level BPE tokenizer, saved to disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from delsim.llm.model import LanguageModel

EOS = "<|endoftext|>"

TINY_TEXT = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat.",
    "A language model predicts the next token from the tokens before it in the sequence.",
    "Split inference runs the first layers on a device and the rest on a server with a GPU.",
    "Differential privacy bounds how much one record can change the output of a mechanism.",
    "Python lists keep their order, while sets store unique elements without any order.",
] * 20


def build_tiny_model(directory: Path, *, seed: int = 0, n_positions: int = 128) -> Path:
    """Write a tiny random GPT-2 (n_embd 32, 2 layers) and its tokenizer to ``directory``."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TINY_TEXT, vocab_size=320, min_frequency=1, special_tokens=[EOS], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, pad_token=EOS)

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=n_positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)

    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random GPT-2 checkpoint."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir: Path) -> LanguageModel:
    """The tiny GPT-2 loaded through :class:`LanguageModel`."""
    return LanguageModel.load(tiny_model_dir)

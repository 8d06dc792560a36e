"""Fixtures of the llm tests: a tiny GPT-2 with a byte-level BPE tokenizer, briefly trained and saved to disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from delsim.llm.model import LanguageModel
from delsim.llm.training import load_split_paragraphs

EOS = "<|endoftext|>"

TINY_TEXT = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat.",
    "A language model predicts the next token from the tokens before it in the sequence.",
    "Split inference runs the first layers on a device and the rest on a server with a GPU.",
    "Differential privacy bounds how much one record can change the output of a mechanism.",
    "Python lists keep their order, while sets store unique elements without any order.",
] * 20


# Several test processes share two cores here, and one intra-op thread per process is faster
# than oversubscribed threads for models this small.
torch.set_num_threads(1)


def pretrain(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, *, steps: int, seed: int) -> None:
    """Train ``model`` with AdamW on windows of the pydoc corpus, so that it uses its context."""
    paragraphs = load_split_paragraphs("pydoc").train
    stream = torch.tensor([token for ids in tokenizer(paragraphs)["input_ids"] for token in (*ids, tokenizer.eos_token_id)])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    model.train()
    for _ in range(steps):
        starts = torch.randint(0, stream.numel() - 64, (16,), generator=generator).tolist()
        batch = torch.stack([stream[start : start + 64] for start in starts])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def build_tiny_model(directory: Path, *, seed: int = 0, n_positions: int = 128, pretrain_steps: int = 0) -> Path:
    """Write a tiny GPT-2 (n_embd 32, 2 layers) and its tokenizer to ``directory``.

    With ``pretrain_steps`` > 0 the random model is first trained that many steps on pydoc text.
    """
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
    if pretrain_steps:
        pretrain(model, tokenizer, steps=pretrain_steps, seed=seed)

    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny GPT-2 trained for 200 steps on pydoc text (about 5 s on one core)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_gpt2"), pretrain_steps=200)


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir: Path) -> LanguageModel:
    """The tiny GPT-2 loaded through :class:`LanguageModel`."""
    return LanguageModel.load(tiny_model_dir)

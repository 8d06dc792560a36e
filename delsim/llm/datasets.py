"""Prompt datasets for utility evaluation: the shipped held-out corpus, hub corpora, local text.

Every loader returns :class:`~delsim.llm.corpus.PromptExample` items cut the way the DEL paper
cuts them: the prompt is the first ``prompt_words`` words of a paragraph of at least
``min_words`` words, and the reference continuation is the rest of it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from delsim.llm.corpus import (
    PromptExample,
    load_corpus_paragraphs,
    load_heldout_paragraphs,
    make_prompt_examples,
    normalize_whitespace,
    split_paragraphs,
)

logger = logging.getLogger(__name__)

HUB_DATASETS = ("wikitext2", "ptb", "cnn_dailymail")
"""Names loaded with the ``datasets`` library; they need the Hugging Face hub or its cache."""

PTB_PROMPT_WORDS = 20
"""Prompt length the DEL paper uses for Penn Treebank, whose sentences are short."""

_WIKITEXT_HEADING = re.compile(r"^\s*=.*=\s*$")
_BLANK_LINES = re.compile(r"\n\s*\n")


def paragraphs_from_text(text: str) -> list[str]:
    """Split text into paragraphs.

    Paragraphs are blocks separated by blank lines. A text with no blank line is read as one
    paragraph per line, the layout of the shipped held-out file. Whitespace inside a paragraph
    is collapsed to single spaces.
    """
    blocks = _BLANK_LINES.split(text) if _BLANK_LINES.search(text) else text.splitlines()
    paragraphs = (normalize_whitespace(block) for block in blocks)
    return [paragraph for paragraph in paragraphs if paragraph]


def group_sentences(sentences: Iterable[str], *, min_words: int) -> list[str]:
    """Join consecutive sentences into paragraphs of at least ``min_words`` words.

    A trailing group shorter than ``min_words`` is dropped.
    """
    paragraphs: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in sentences:
        sentence = normalize_whitespace(sentence)
        if not sentence:
            continue
        current.append(sentence)
        count += len(sentence.split())
        if count >= min_words:
            paragraphs.append(" ".join(current))
            current, count = [], 0
    return paragraphs


def _default_paragraphs(split: str) -> list[str]:
    if split in ("test", "heldout"):
        return load_heldout_paragraphs()
    if split in ("train", "validation"):
        return getattr(split_paragraphs(load_corpus_paragraphs("python-docs")), split)
    raise ValueError(f"split={split!r} is not a split of the default corpus; use test (held-out), train or validation")


def _hub_paragraphs(name: str, split: str, min_words: int) -> list[str]:
    from datasets import load_dataset

    # NOTE: these three loaders are not exercised by the test suite, which runs with no network.
    if name == "wikitext2":
        rows = load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split=split)
        lines = (row["text"] for row in rows)
        return [normalize_whitespace(line) for line in lines if line.strip() and not _WIKITEXT_HEADING.match(line)]
    if name == "ptb":
        rows = load_dataset("ptb-text-only/ptb_text_only", split=split)
        return group_sentences((row["sentence"] for row in rows), min_words=min_words)
    rows = load_dataset("abisee/cnn_dailymail", "3.0.0", split=split)
    return [normalize_whitespace(row["article"]) for row in rows]


def _file_path(name: str) -> Path | None:
    if name.startswith("file:"):
        return Path(name.removeprefix("file:"))
    if name.endswith(".txt") or Path(name).is_file():
        return Path(name)
    return None


def load_paragraphs(name: str, *, split: str = "test", min_words: int = 100) -> list[str]:
    """Load the paragraphs of a named dataset; see :func:`load_prompt_dataset` for the names.

    ``min_words`` is used only to group Penn Treebank sentences into paragraphs.
    """
    path = _file_path(name)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"dataset file not found: {path}; pass an existing UTF-8 text file")
        return paragraphs_from_text(path.read_text(encoding="utf-8"))
    if name == "default":
        return _default_paragraphs(split)
    if name in HUB_DATASETS:
        return _hub_paragraphs(name, split, min_words)
    raise ValueError(
        f"unknown dataset {name!r}; use 'default', one of {', '.join(HUB_DATASETS)}, "
        "'file:PATH' or a path to a .txt file"
    )


def load_prompt_dataset(
    name: str,
    *,
    split: str = "test",
    prompt_words: int = 50,
    min_words: int = 100,
    limit: int | None = None,
) -> list[PromptExample]:
    """Load prompts and reference continuations for utility evaluation.

    Parameters
    ----------
    name
        ``"default"``: the held-out corpus shipped with the embedded model (split ``test``; the
        ``train`` and ``validation`` splits need the Python documentation corpus installed).
        ``"wikitext2"``, ``"ptb"``, ``"cnn_dailymail"``: loaded with ``datasets`` from the
        Hugging Face hub or its cache. ``"file:PATH"`` or a path to a ``.txt`` file: paragraphs
        of a local UTF-8 text file, separated by blank lines, or one per line if the file has
        no blank line.
    split
        Dataset split.
    prompt_words
        Words per prompt (the DEL paper uses 50, and 20 for Penn Treebank).
    min_words
        Minimum words of a paragraph that gives a prompt.
    limit
        Keep at most this many examples, in dataset order.

    Returns
    -------
    list[PromptExample]
        Prompts, references and paragraph indices.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")

    paragraphs = load_paragraphs(name, split=split, min_words=min_words)
    examples = make_prompt_examples(paragraphs, prompt_words=prompt_words, min_words=min_words)
    if limit is not None:
        examples = examples[:limit]
    logger.info("loaded %d prompt examples from %s (%s) out of %d paragraphs", len(examples), name, split, len(paragraphs))
    return examples

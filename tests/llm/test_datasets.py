"""Tests of the prompt dataset loaders on local text files."""

from __future__ import annotations

from pathlib import Path

import pytest

from delsim.llm.datasets import group_sentences, load_prompt_dataset, paragraphs_from_text


def _paragraph(word: str, count: int) -> str:
    return " ".join(f"{word}{i}" for i in range(count))


def test_blank_line_paragraphs() -> None:
    text = "first line\nsecond   line\n\n\nthird\n  \nfourth\n"
    assert paragraphs_from_text(text) == ["first line second line", "third", "fourth"]


def test_one_paragraph_per_line() -> None:
    assert paragraphs_from_text("alpha beta\ngamma\n") == ["alpha beta", "gamma"]


def test_file_prefix_and_txt_path(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join([_paragraph("a", 120), _paragraph("b", 60), _paragraph("c", 100)]), encoding="utf-8")

    for name in (f"file:{path}", str(path)):
        examples = load_prompt_dataset(name)
        assert [example.paragraph_id for example in examples] == [0, 2]
        assert examples[0].prompt == _paragraph("a", 50)
        assert examples[0].reference.split() == [f"a{i}" for i in range(50, 120)]


def test_prompt_words_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(_paragraph(word, 40) for word in "abcde"), encoding="utf-8")
    examples = load_prompt_dataset(f"file:{path}", prompt_words=20, min_words=30, limit=3)
    assert len(examples) == 3
    assert all(len(example.prompt.split()) == 20 for example in examples)
    assert all(len(example.reference.split()) == 20 for example in examples)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        load_prompt_dataset(f"file:{tmp_path / 'nothing.txt'}")


def test_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_prompt_dataset("imagenet")


def test_group_sentences() -> None:
    sentences = ["one two three.", "four five.", "six seven eight nine.", "ten."]
    assert group_sentences(sentences, min_words=5) == ["one two three. four five.", "six seven eight nine. ten."]
    assert group_sentences(sentences, min_words=20) == []


def test_default_heldout_prompts() -> None:
    examples = load_prompt_dataset("default", limit=5)
    assert len(examples) == 5
    assert all(len(example.prompt.split()) == 50 for example in examples)
    assert all(len(example.reference.split()) >= 50 for example in examples)

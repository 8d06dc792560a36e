"""Tests of the default-LM corpus: loading, hash split, held-out file and prompt examples."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from delsim.llm import corpus
from delsim.llm.corpus import (
    LONG_PARAGRAPH_WORDS,
    load_corpus_paragraphs,
    load_heldout_paragraphs,
    make_prompt_examples,
    split_name,
    split_paragraphs,
    write_heldout,
)
from delsim.llm.defaults import DEFAULT_CORPUS_DIR


@pytest.fixture(scope="module")
def pydoc_paragraphs() -> list[str]:
    return load_corpus_paragraphs("pydoc")


def _random_paragraphs(count: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(5000)]
    return [" ".join(rng.choice(vocabulary) for _ in range(words)) for _ in range(count)]


def test_pydoc_corpus_is_deterministic(pydoc_paragraphs: list[str]) -> None:
    assert load_corpus_paragraphs("pydoc") == pydoc_paragraphs


def test_pydoc_corpus_is_clean_prose(pydoc_paragraphs: list[str]) -> None:
    assert len(pydoc_paragraphs) > 500
    assert corpus.count_words(pydoc_paragraphs) > 20_000
    assert len(set(pydoc_paragraphs)) == len(pydoc_paragraphs)
    for paragraph in pydoc_paragraphs:
        assert len(paragraph.split()) >= corpus.MIN_PARAGRAPH_WORDS
        assert "\n" not in paragraph
        assert ">>>" not in paragraph
        assert paragraph == paragraph.strip()


def test_unknown_source_rejected() -> None:
    with pytest.raises(ValueError, match="invalid corpus source 'wiki'"):
        load_corpus_paragraphs("wiki")


def test_missing_docs_dir_names_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python3.11-doc"):
        load_corpus_paragraphs("python-docs", docs_dir=tmp_path / "absent")


def test_html_parser_keeps_only_body_prose(tmp_path: Path) -> None:
    page = """<html><body>
    <div class="related" role="navigation"><p>Navigation text that is long enough to count here</p></div>
    <div class="document"><div class="body" role="main">
      <h1>Title of the page<a class="headerlink">¶</a></h1>
      <p>The <code>len()</code> function returns the number of items in a container.</p>
      <div class="highlight-python3"><div class="highlight"><pre>for item in items: print(item)</pre></div></div>
      <table><tr><td><p>Cell text that is also long enough to be kept.</p></td></tr></table>
      <dl><dd><p>A definition paragraph with <em>emphasis</em> and
      a line break inside it.</p></dd></dl>
      <p>Short one.</p>
    </div></div>
    <div class="sphinxsidebar"><p>Sidebar text that is long enough to count as prose</p></div>
    </body></html>"""
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "page.html").write_text(page, encoding="utf-8")
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "skipped.html").write_text(page, encoding="utf-8")

    paragraphs = load_corpus_paragraphs("python-docs", docs_dir=tmp_path)

    assert paragraphs == [
        "The len() function returns the number of items in a container.",
        "A definition paragraph with emphasis and a line break inside it.",
    ]


@pytest.mark.skipif(not corpus.PYTHON_DOCS_DIR.is_dir(), reason="python3.11-doc is not installed")
def test_python_docs_corpus_size() -> None:
    paragraphs = load_corpus_paragraphs("python-docs")

    assert corpus.count_words(paragraphs) > 900_000
    assert not any("¶" in p for p in paragraphs)


def test_split_is_disjoint_and_complete(pydoc_paragraphs: list[str]) -> None:
    split = split_paragraphs(pydoc_paragraphs)

    train, validation, heldout = set(split.train), set(split.validation), set(split.heldout)
    assert not train & validation
    assert not train & heldout
    assert not validation & heldout
    assert train | validation | heldout == set(pydoc_paragraphs)
    assert len(split.train) + len(split.validation) + len(split.heldout) == len(pydoc_paragraphs)


def test_split_ignores_order(pydoc_paragraphs: list[str]) -> None:
    forward = split_paragraphs(pydoc_paragraphs)
    backward = split_paragraphs(list(reversed(pydoc_paragraphs)))

    assert backward.train == list(reversed(forward.train))
    assert backward.validation == list(reversed(forward.validation))
    assert backward.heldout == list(reversed(forward.heldout))


def test_split_name_is_stable() -> None:
    # SHA-256 buckets are fixed, so these assignments never change between runs or machines.
    names = [split_name(f"paragraph number {i} of the stability check") for i in range(400)]

    assert names == [split_name(f"paragraph number {i} of the stability check") for i in range(400)]
    assert set(names) == {"train", "validation", "heldout"}


@pytest.mark.parametrize(
    ("words", "expected_heldout", "expected_train"),
    [(20, 0.05, 0.90), (LONG_PARAGRAPH_WORDS, 0.45, 0.45)],
)
def test_split_shares(words: int, expected_heldout: float, expected_train: float) -> None:
    count = 4000
    paragraphs = _random_paragraphs(count, words, seed=words)

    split = split_paragraphs(paragraphs)

    # Hash buckets behave like independent draws, so each share is binomial; 4 standard deviations.
    for observed, expected in ((len(split.heldout), expected_heldout), (len(split.train), expected_train)):
        tolerance = 4 * (expected * (1 - expected) / count) ** 0.5
        assert abs(observed / count - expected) < tolerance


def test_prompt_examples_word_counts() -> None:
    paragraphs = [" ".join(f"a{i}" for i in range(n)) for n in (99, 100, 180, 40)]

    examples = make_prompt_examples(paragraphs)

    assert [e.paragraph_id for e in examples] == [1, 2]
    for example in examples:
        assert len(example.prompt.split()) == 50
        assert example.prompt.split()[0] == "a0"
        assert example.reference.split()[0] == "a50"
    assert len(examples[0].reference.split()) == 50
    assert len(examples[1].reference.split()) == 130


def test_prompt_examples_reference_limit() -> None:
    paragraphs = [" ".join(f"a{i}" for i in range(n)) for n in (30, 45)]

    examples = make_prompt_examples(paragraphs, prompt_words=20, min_words=30, reference_words=12)

    assert [len(e.prompt.split()) for e in examples] == [20, 20]
    assert [len(e.reference.split()) for e in examples] == [10, 12]
    assert examples[1].reference == " ".join(f"a{i}" for i in range(20, 32))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt_words": 0}, "prompt_words"),
        ({"prompt_words": 50, "min_words": 50}, "min_words"),
        ({"reference_words": 0}, "reference_words"),
    ],
)
def test_prompt_examples_reject_bad_arguments(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=f"invalid {field}"):
        make_prompt_examples(["word " * 200], **kwargs)


def test_heldout_round_trip(tmp_path: Path, pydoc_paragraphs: list[str]) -> None:
    heldout = split_paragraphs(pydoc_paragraphs).heldout

    path = write_heldout(heldout, tmp_path, source="pydoc", extra={"train_words": 123})

    assert load_heldout_paragraphs(path) == heldout
    assert load_heldout_paragraphs(tmp_path) == heldout
    provenance = json.loads((tmp_path / corpus.PROVENANCE_FILENAME).read_text(encoding="utf-8"))
    assert provenance["source"] == "pydoc"
    assert provenance["paragraphs"] == len(heldout)
    assert provenance["words"] == corpus.count_words(heldout)
    assert provenance["bytes"] == path.stat().st_size
    assert provenance["train_words"] == 123


def test_heldout_size_limit(tmp_path: Path) -> None:
    paragraphs = ["x" * 99] * 10

    path = write_heldout(paragraphs, tmp_path, source="pydoc", max_bytes=350)

    assert load_heldout_paragraphs(path) == ["x" * 99] * 3
    provenance = json.loads((tmp_path / corpus.PROVENANCE_FILENAME).read_text(encoding="utf-8"))
    assert provenance["paragraphs_left_out_for_size"] == 7


def test_heldout_rejects_line_breaks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="line break"):
        write_heldout(["one\ntwo"], tmp_path, source="pydoc")


def test_missing_heldout_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="held-out corpus file not found"):
        load_heldout_paragraphs(tmp_path / "absent.txt")


def test_shipped_heldout_file() -> None:
    path = DEFAULT_CORPUS_DIR / corpus.HELDOUT_FILENAME
    paragraphs = load_heldout_paragraphs()
    provenance = json.loads((DEFAULT_CORPUS_DIR / corpus.PROVENANCE_FILENAME).read_text(encoding="utf-8"))

    assert path.stat().st_size < 1_000_000
    assert provenance["source"] == "python-docs"
    assert provenance["paragraphs"] == len(paragraphs)
    assert len(make_prompt_examples(paragraphs)) >= 200
    assert all(split_name(p) == "heldout" for p in paragraphs)

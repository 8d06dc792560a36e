"""Tests of COH with the shipped all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import pytest

from delsim.llm.metrics import CoherenceScorer


@pytest.fixture(scope="module")
def scorer() -> CoherenceScorer:
    return CoherenceScorer()


def test_identical_texts_score_one(scorer: CoherenceScorer) -> None:
    texts = ["The cat sat on the mat.", "Split inference sends compressed embeddings to a server."]
    for value in scorer.score(texts, texts):
        assert value == pytest.approx(1.0, abs=1e-5)


def test_unrelated_texts_score_lower(scorer: CoherenceScorer) -> None:
    generated = ["The cat sat on the warm mat by the fire.", "The cat sat on the warm mat by the fire."]
    reference = ["A cat was sitting on a mat near the fireplace.", "Quarterly bond yields rose after the bank report."]
    related, unrelated = scorer.score(generated, reference)
    assert related > 0.6
    assert unrelated < 0.3
    assert unrelated < related


def test_length_mismatch_raises(scorer: CoherenceScorer) -> None:
    with pytest.raises(ValueError, match="same length"):
        scorer.score(["a"], ["a", "b"])


def test_empty_input(scorer: CoherenceScorer) -> None:
    assert scorer.score([], []) == []

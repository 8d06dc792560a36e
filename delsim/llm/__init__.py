"""The LLM side: causal LM loading, the embedded default model, soft prompts, training recipes and utility metrics."""

from delsim.llm.datasets import load_prompt_dataset
from delsim.llm.metrics import CoherenceScorer, corpus_perplexity, perplexity
from delsim.llm.model import LanguageModel
from delsim.llm.soft_prompt import PrivacyConfig, SoftPromptLibrary

__all__ = [
    "CoherenceScorer",
    "LanguageModel",
    "PrivacyConfig",
    "SoftPromptLibrary",
    "corpus_perplexity",
    "load_prompt_dataset",
    "perplexity",
]

"""The LLM side: causal LM loading, the embedded default model, soft prompts, training recipes and utility metrics."""

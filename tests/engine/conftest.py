"""Helpers for engine tests: configs are built as dicts, validated, compiled."""

from __future__ import annotations

from typing import Any

from concord.config.model import Config
from concord.engine.compile import compile_graph
from concord.engine.graph import Graph

PROVIDERS: dict[str, Any] = {
    "openai": {"type": "openai", "api_keys": ["sk-openai-secret"]},
    "azure": {"type": "azure", "base_url": "https://x", "api_keys": ["az-secret"]},
    "anthropic": {"type": "anthropic", "api_keys": ["sk-ant-secret"]},
}
MODELS: dict[str, Any] = {
    "gpt-4o": {"targets": ["openai/gpt-4o", "azure/gpt-4o"], "context_window": 128000,
               "price": {"input": 2.5, "output": 10}},
    "claude-sonnet": {"targets": ["anthropic/claude-sonnet-4-5"], "context_window": 200000},
    "fast": {"targets": ["openai/gpt-4o-mini"], "context_window": 16000},
    "embed": {"targets": ["openai/text-embedding-3-small"]},
}  # fmt: skip


def build(**sections: Any) -> Graph:
    """A graph from config sections; providers and models default to the ones above."""
    raw = {"version": 1, "providers": PROVIDERS, "models": MODELS, **sections}
    return compile_graph(Config.model_validate(raw))

"""Any OpenAI-compatible API: OpenAI itself, vLLM, Ollama, OpenRouter, Groq... (SPEC §2.2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concord.providers.base import UpstreamEndpoint
from concord.providers.http import HTTPProvider

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


class OpenAIProvider(HTTPProvider):
    wire = "openai"
    native = frozenset({"chat", "completions", "embeddings"})
    # SPEC §2.2: local OpenAI-compatible servers (Ollama, vLLM) often need no key.
    requires_key = False

    def url(self, endpoint: UpstreamEndpoint, body: Mapping[str, Any]) -> str:
        if endpoint not in PATHS:
            raise ValueError(f"{self.name}: endpoint {endpoint!r} is not native to OpenAI")
        return (self.spec.base_url or DEFAULT_BASE_URL).rstrip("/") + PATHS[endpoint]

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

"""Anthropic's Messages API (SPEC §2.2). Chat requests reach it translated by the data plane."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concord.providers.base import UpstreamEndpoint
from concord.providers.http import HTTPProvider

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class AnthropicProvider(HTTPProvider):
    wire = "anthropic"
    native = frozenset({"messages"})

    def url(self, endpoint: UpstreamEndpoint, body: Mapping[str, Any]) -> str:
        if endpoint != "messages":
            raise ValueError(f"{self.name}: endpoint {endpoint!r} is not native to Anthropic")
        base = (self.spec.base_url or DEFAULT_BASE_URL).rstrip("/")
        # Accept base URLs written with or without the SDK's `/v1` suffix.
        return base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    def default_headers(self) -> dict[str, str]:
        return {"anthropic-version": API_VERSION}

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"x-api-key": key} if key else {}

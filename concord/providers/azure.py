"""Azure OpenAI: deployment-scoped paths, `api-key` header, `api-version` query (SPEC §2.2).

The upstream model of a target (`azure-eu/gpt-4o`) is the deployment name; it is read from the
body's `model`, which Azure ignores, so the body goes out unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from concord.providers.base import UpstreamEndpoint
from concord.providers.http import HTTPProvider
from concord.providers.openai import PATHS

DEFAULT_API_VERSION = "2024-10-21"


class AzureProvider(HTTPProvider):
    wire = "openai"
    native = frozenset({"chat", "completions", "embeddings"})

    def url(self, endpoint: UpstreamEndpoint, body: Mapping[str, Any]) -> str:
        if endpoint not in PATHS:
            raise ValueError(f"{self.name}: endpoint {endpoint!r} is not native to Azure OpenAI")
        if not self.spec.base_url:
            raise ValueError(f"{self.name}: an azure provider needs base_url")
        deployment = quote(str(body.get("model") or ""), safe="")
        version = quote(self.spec.api_version or DEFAULT_API_VERSION, safe="")
        base = self.spec.base_url.rstrip("/")
        return f"{base}/openai/deployments/{deployment}{PATHS[endpoint]}?api-version={version}"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"api-key": key} if key else {}

"""`concord explain` output (SPEC §6): a request context from a body, and the decision in words.

`request_fields(body)` reads an OpenAI or Anthropic request body the way routing sees it
(model, max_tokens, temperature, stream, tools, images, metadata, user, and a rough
`input_tokens` of characters / 4; the data plane has its own estimator). `render(...)` prints an
`Explanation`: the matched route, why each earlier route missed, the attempt plan and every policy
that applies. Nothing here prints a secret: provider keys are not part of a decision, and
credential headers are masked by the matcher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concord.config.values import format_duration
from concord.engine.graph import (
    BudgetRule,
    Decision,
    Explanation,
    Graph,
    RateLimitRule,
    RequestContext,
    RetryPolicy,
)
from concord.engine.match import render_value

_CHARS_PER_TOKEN = 4


def request_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """RequestContext fields found in an OpenAI or Anthropic request body."""
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    user = body.get("user")
    if user is None:
        user = metadata.get("user_id")  # Anthropic puts the end user here (SPEC §2.4.1)
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    return {
        "model": str(body.get("model", "")),
        "max_tokens": max_tokens if isinstance(max_tokens, int) else None,
        "temperature": body.get("temperature"),
        "stream": bool(body.get("stream", False)),
        "tools": bool(body.get("tools") or body.get("functions")),
        "images": _has_images(body.get("messages")),
        "metadata": dict(metadata),
        "user": str(user) if user is not None else None,
        "input_tokens": estimate_tokens(body),
    }


def endpoint_of(body: Mapping[str, Any]) -> str:
    """A best guess at the endpoint a body was meant for, when the user did not say."""
    if "messages" in body:
        return "chat"
    if "prompt" in body:
        return "completions"
    if "input" in body:
        return "embeddings"
    return "chat"


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """Characters of prompt text / 4: enough to show which route a body takes."""
    chars = sum(len(text) for key in ("system", "messages", "prompt", "input") for text in
                _texts(body.get(key)))  # fmt: skip
    return chars // _CHARS_PER_TOKEN


def _texts(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [text for item in node for text in _texts(item)]
    if isinstance(node, Mapping):
        texts = _texts(node.get("content")) + _texts(node.get("text"))
        return texts
    return []


def _has_images(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list) and any(
            isinstance(part, Mapping) and part.get("type") in ("image_url", "image", "input_image")
            for part in content
        ):
            return True
    return False


# -- rendering -------------------------------------------------------------------------------------


def render(explanation: Explanation, graph: Graph, ctx: RequestContext) -> str:
    """The explanation as text, one section per policy."""
    d = explanation.decision
    lines = [f"request: {_request(ctx)}"]
    lines.append(f"config: {graph.version}" if graph.version else "config: (unversioned)")
    if explanation.misses:
        lines.append("earlier routes that did not match:")
        lines.extend(f"  {miss.route}: {miss.condition}" for miss in explanation.misses)
    lines.append(f"route: {d.route}" if d.route else "route: (none matched; requested model)")
    if d.rejection is not None:
        lines.append(f"rejected: {d.rejection.status} {d.rejection.message}")
        return "\n".join(lines) + "\n"
    if d.model is None:
        lines.append(f"model: '{d.requested_model}' -> 404 model_not_found")
        return "\n".join(lines) + "\n"
    lines.extend(_plan(d))
    lines.extend(_policies(d))
    return "\n".join(lines) + "\n"


def _request(ctx: RequestContext) -> str:
    parts = [ctx.endpoint, ctx.model, f"workspace={ctx.workspace}"]
    for name in ("key", "user", "max_tokens", "temperature"):
        value = getattr(ctx, name)
        if value is not None:
            parts.append(f"{name}={value}")
    parts.append(f"input_tokens={ctx.input_tokens}")
    parts.extend(name for name in ("stream", "tools", "images") if getattr(ctx, name))
    if ctx.tags:
        parts.append("tags=" + ",".join(sorted(ctx.tags)))
    return " ".join(parts)


def _plan(d: Decision) -> list[str]:
    lines = [f"model: {d.model}"]
    if d.fallbacks:
        lines.append("fallbacks: " + ", ".join(d.fallbacks))
    lines.append("attempts:" if d.attempts else "attempts: none (every target was skipped)")
    for i, attempt in enumerate(d.attempts, 1):
        tries = "try" if attempt.tries == 1 else "tries"
        lines.append(f"  {i}. {attempt.target.id} ({attempt.model}), {attempt.tries} {tries}")
    if d.skipped:
        lines.append("skipped:")
        lines.extend(f"  {s.target} ({s.model}): {s.reason}" for s in d.skipped)
    return lines


def _policies(d: Decision) -> list[str]:
    lines = [
        f"retry: {_retry(d.retry)}",
        f"timeout: {format_duration(d.timeout)}",
        f"context overflow: {d.context_overflow}",
    ]
    if d.cache is None:
        lines.append("cache: off")
    else:
        lines.append(f"cache: ttl {format_duration(d.cache.ttl)}, scope {d.cache.scope}")
    lines.append("rate limits: " + (", ".join(_limit(r) for r in d.rate_limits) or "none"))
    lines.append("budgets: " + (", ".join(_budget(b) for b in d.budgets) or "none"))
    lines.append(f"params: {_params(d)}")
    if d.price is not None:
        p = d.price
        lines.append(f"price: ${p.input:g} input, ${p.output:g} output per 1M tokens")
    return lines


def _retry(r: RetryPolicy) -> str:
    on = [str(s) for s in sorted(r.on_status)]
    on += [
        name for name, flag in (("timeout", r.on_timeout), ("connection", r.on_connection)) if flag
    ]
    b = r.backoff
    backoff = f"backoff {format_duration(b.initial)}..{format_duration(b.max)}"
    jitter = " with jitter" if b.jitter else ""
    return f"{r.attempts} per target, {backoff}{jitter}, on {' '.join(on) or 'nothing'}"


def _limit(rule: RateLimitRule) -> str:
    sizes = [f"{n} {unit}" for n, unit in ((rule.rpm, "rpm"), (rule.tpm, "tpm")) if n]
    return f"{rule.name} (per {rule.per}{', ' if sizes else ''}{', '.join(sizes)})"


def _budget(rule: BudgetRule) -> str:
    action = rule.on_exceed
    if rule.on_exceed == "downgrade" and rule.downgrade_to:
        action = f"downgrade to {rule.downgrade_to}"
    return f"{rule.name} (${rule.limit_usd:g} per {rule.period}, {action})"


def _params(d: Decision) -> str:
    parts = []
    if d.params.set:
        parts.append(f"set {render_value(dict(d.params.set))}")
    if d.params.max:  # caps are read as numbers: 1024 is written back as 1024, not 1024.0
        caps = {k: int(v) if float(v).is_integer() else v for k, v in d.params.max.items()}
        parts.append(f"max {render_value(caps)}")
    return ", ".join(parts) or "none"

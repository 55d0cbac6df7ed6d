"""Legacy `/v1/completions` served by a chat-only target (SPEC §3).

The prompt becomes one user message; the chat answer becomes `choices[].text`. Parameters with no
chat counterpart (`suffix`, `echo`, `best_of`, `logprobs`) are dropped. A prompt given as several
strings or as token ids cannot be expressed as one chat turn and raises ValueError (a 400).
"""

from __future__ import annotations

import json
import time
from typing import Any

from concord.providers.base import SSEEvent
from concord.translate.anthropic_openai import Untranslatable

JSON = dict[str, Any]
_PASSED_THROUGH = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "stream",
    "stream_options",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if prompt is None:
        return ""
    raise Untranslatable(
        "only a single string prompt can be served by a chat model", param="prompt"
    )


def completion_request_to_chat(body: JSON) -> JSON:
    """A completions request as a chat request with the prompt as the one user message."""
    out = {name: body[name] for name in _PASSED_THROUGH if body.get(name) is not None}
    out["messages"] = [{"role": "user", "content": _prompt_text(body.get("prompt"))}]
    return out


def _completion_id(chat_id: str | None) -> str:
    suffix = (chat_id or "").removeprefix("chatcmpl-") or str(int(time.time() * 1000))
    return "cmpl-" + suffix


def _finish(reason: str | None) -> str | None:
    if reason is None:
        return None
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def chat_response_to_completion(body: JSON) -> JSON:
    """A chat.completion as a text_completion."""
    choices = []
    for choice in body.get("choices") or []:
        message = choice.get("message") or {}
        choices.append(
            {
                "text": message.get("content") or "",
                "index": choice.get("index", 0),
                "logprobs": None,
                "finish_reason": _finish(choice.get("finish_reason")) or "stop",
            }
        )
    out: JSON = {
        "id": _completion_id(body.get("id")),
        "object": "text_completion",
        "created": body.get("created") or int(time.time()),
        "model": body.get("model") or "",
        "choices": choices,
    }
    if isinstance(body.get("usage"), dict):
        usage = body["usage"]
        out["usage"] = {
            name: usage[name]
            for name in ("prompt_tokens", "completion_tokens", "total_tokens")
            if name in usage
        }
    return out


class ChatToCompletionStream:
    """chat.completion.chunk events in, text_completion chunks (and [DONE]) out."""

    def __init__(self) -> None:
        self._done = False

    def feed(self, event: SSEEvent) -> list[SSEEvent]:
        if self._done:
            return []
        if event.data.strip() == "[DONE]":
            self._done = True
            return [SSEEvent(data="[DONE]")]
        try:
            chunk = json.loads(event.data)
        except ValueError:
            return []
        if not isinstance(chunk, dict) or chunk.get("error"):
            return [event]
        choices = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
            finish = _finish(choice.get("finish_reason"))
            if not text and finish is None:
                continue  # the role-only first chunk has no completions form
            choices.append(
                {
                    "text": text,
                    "index": choice.get("index", 0),
                    "logprobs": None,
                    "finish_reason": finish,
                }
            )
        if not choices and not chunk.get("usage"):
            return []
        out: JSON = {
            "id": _completion_id(chunk.get("id")),
            "object": "text_completion",
            "created": chunk.get("created") or int(time.time()),
            "model": chunk.get("model") or "",
            "choices": choices,
        }
        if chunk.get("usage"):
            out["usage"] = chunk["usage"]
        return [SSEEvent(data=json.dumps(out, separators=(",", ":")))]

    def finish(self) -> list[SSEEvent]:
        if self._done:
            return []
        self._done = True
        return [SSEEvent(data="[DONE]")]

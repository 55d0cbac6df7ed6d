"""OpenAI Chat Completions <-> Anthropic Messages, both directions (SPEC §3).

Pure functions over JSON-shaped dicts: requests, responses and error bodies. Streams live in
`streams.py`. What has no counterpart on the other side is dropped (Anthropic `top_k`, thinking
blocks, cache_control; OpenAI `n`, penalties, logprobs) rather than failing the request.

Choices worth knowing:
- OpenAI `temperature` runs 0..2, Anthropic's 0..1: values above 1 are capped at 1.
- Anthropic requires `max_tokens`; an OpenAI request without one gets `default_max_tokens`.
- OpenAI bodies get `max_completion_tokens` (what current OpenAI models require); pass
  `max_tokens_field="max_tokens"` for older OpenAI-compatible servers.
- All system/developer messages become Anthropic's top-level `system`, joined by blank lines.
- OpenAI's deprecated `functions` / `function_call` (used without `tools`) become Anthropic tools
  limited to one call per turn, and the answer comes back the legacy way: `message.function_call`
  and `finish_reason: "function_call"` (`legacy_functions=True`; streams in `streams.py`). A
  `function` message answers the assistant's `function_call` before it as a `tool_result`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from concord.translate.usage import (
    anthropic_usage_dict,
    openai_usage_dict,
    usage_from_anthropic,
    usage_from_openai,
)

JSON = dict[str, Any]

# SPEC §3: stop reasons, both ways.
ANTHROPIC_TO_OPENAI_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
OPENAI_TO_ANTHROPIC_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def uses_legacy_functions(body: JSON) -> bool:
    """True for a chat request using the deprecated `functions` rather than `tools`: its answer
    must carry `function_call`, as OpenAI answers such a request."""
    return bool(body.get("functions")) and not body.get("tools")


# ---- ids -------------------------------------------------------------------------------------


def anthropic_message_id(openai_id: str | None) -> str:
    """`chatcmpl-abc` -> `msg_abc`; keeps the upstream's id recognisable in both formats."""
    if openai_id and openai_id.startswith("msg_"):
        return openai_id
    if openai_id and openai_id.startswith("chatcmpl-"):
        return "msg_" + openai_id.removeprefix("chatcmpl-")
    return "msg_" + (openai_id or uuid.uuid4().hex)


def new_tool_use_id() -> str:
    """An id for a `tool_use` block made here (an OpenAI call that had none)."""
    return "toolu_" + uuid.uuid4().hex[:24]


def openai_completion_id(anthropic_id: str | None) -> str:
    """`msg_abc` -> `chatcmpl-abc`."""
    if anthropic_id and anthropic_id.startswith("chatcmpl-"):
        return anthropic_id
    if anthropic_id and anthropic_id.startswith("msg_"):
        return "chatcmpl-" + anthropic_id.removeprefix("msg_")
    return "chatcmpl-" + (anthropic_id or uuid.uuid4().hex)


# ---- Anthropic request -> OpenAI request -------------------------------------------------------


def anthropic_request_to_openai(
    body: JSON, *, max_tokens_field: str = "max_completion_tokens"
) -> JSON:
    """A Messages request as a Chat Completions request."""
    out: JSON = {"model": body.get("model"), "messages": _anthropic_messages_to_openai(body)}
    if body.get("max_tokens") is not None:
        out[max_tokens_field] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # SPEC §2.6: spend needs usage
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id"):
        out["user"] = metadata["user_id"]
    tools = [_anthropic_tool_to_openai(t) for t in body.get("tools") or [] if "input_schema" in t]
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        converted = _anthropic_tool_choice_to_openai(choice)
        if converted is not None and (tools or converted == "none"):
            out["tool_choice"] = converted
        if choice.get("disable_parallel_tool_use") and tools:
            out["parallel_tool_calls"] = False
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n\n".join(b.get("text", "") for b in system if b.get("type") == "text")
    return ""


def _anthropic_messages_to_openai(body: JSON) -> list[JSON]:
    messages: list[JSON] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in body.get("messages") or []:
        if message.get("role") == "assistant":
            messages.append(_anthropic_assistant_to_openai(message.get("content")))
        else:
            messages.extend(_anthropic_user_to_openai(message.get("content")))
    return messages


def _anthropic_assistant_to_openai(content: Any) -> JSON:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    tool_calls: list[JSON] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
    out: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if tool_calls:
        out["tool_calls"] = tool_calls
    elif out["content"] is None:
        out["content"] = ""
    return out


def _anthropic_user_to_openai(content: Any) -> list[JSON]:
    """One user turn: its tool results become `tool` messages (first, as OpenAI requires them
    right after the assistant's tool calls), the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[JSON] = []
    parts: list[JSON] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "tool_result":
            text, images = _tool_result_content(block)
            tool_messages.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
            )
            parts.extend(images)  # OpenAI tool messages carry text only
        else:
            part = _anthropic_block_to_openai_part(block)
            if part is not None:
                parts.append(part)
    out = list(tool_messages)
    if parts:
        if all(p["type"] == "text" for p in parts) and len(parts) == 1:
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _tool_result_content(block: JSON) -> tuple[str, list[JSON]]:
    content = block.get("content")
    if isinstance(content, str):
        text = content
        images: list[JSON] = []
    else:
        texts = [b.get("text", "") for b in content or [] if b.get("type") == "text"]
        text = "\n".join(texts)
        images = [
            part
            for b in content or []
            if b.get("type") == "image" and (part := _anthropic_block_to_openai_part(b))
        ]
    if block.get("is_error") and not text.startswith("Error"):
        text = f"Error: {text}"
    return text, images


def _anthropic_block_to_openai_part(block: JSON) -> JSON | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    source = block.get("source") or {}
    if kind == "image":
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif source.get("type") == "url":
            url = source.get("url", "")
        else:
            return None
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "document" and source.get("type") == "base64":
        data_url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        name = block.get("title") or "document.pdf"
        return {"type": "file", "file": {"file_data": data_url, "filename": name}}
    if kind == "document" and source.get("type") == "text":
        return {"type": "text", "text": source.get("data", "")}
    return None


def _anthropic_tool_to_openai(tool: JSON) -> JSON:
    function: JSON = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _anthropic_tool_choice_to_openai(choice: JSON) -> Any:
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return {"auto": "auto", "none": "none", "any": "required"}.get(kind or "")


# ---- OpenAI request -> Anthropic request -------------------------------------------------------


def openai_request_to_anthropic(body: JSON, *, default_max_tokens: int = 4096) -> JSON:
    """A Chat Completions request as a Messages request."""
    system, messages = _openai_messages_to_anthropic(body.get("messages") or [])
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out: JSON = {
        "model": body.get("model"),
        "messages": messages,
        "max_tokens": max_tokens or default_max_tokens,
    }
    if system:
        out["system"] = system
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    tools = _openai_tools_to_anthropic(body)
    if tools:
        out["tools"] = tools
    choice = _openai_tool_choice_to_anthropic(body.get("tool_choice", body.get("function_call")))
    single = body.get("parallel_tool_calls") is False or uses_legacy_functions(body)
    if single and tools and (choice is None or choice.get("type") != "none"):
        choice = dict(choice or {"type": "auto"}, disable_parallel_tool_use=True)
    if choice is not None and (tools or choice.get("type") == "none"):
        out["tool_choice"] = choice
    return out


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") or p.get("refusal", "")
            for p in content
            if p.get("type") in ("text", "refusal")
        )
    return ""


def _openai_messages_to_anthropic(messages: list[JSON]) -> tuple[str, list[JSON]]:
    system: list[str] = []
    out: list[JSON] = []
    function_id: str | None = None  # the tool_use id of the last assistant `function_call`
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            text = _content_text(message.get("content"))
            if text:
                system.append(text)
            continue
        if role == "assistant":
            function_id = new_tool_use_id() if message.get("function_call") else None
            blocks = _openai_assistant_blocks(message, function_id)
            converted = {"role": "assistant", "content": blocks}
        elif role == "function" and function_id is not None:  # legacy: answers that call
            block = {
                "type": "tool_result",
                "tool_use_id": function_id,
                "content": _content_text(message.get("content")),
            }
            converted = {"role": "user", "content": [block]}
            function_id = None
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _content_text(message.get("content")),
            }
            converted = {"role": "user", "content": [block]}
        elif role == "user":
            converted = {"role": "user", "content": _openai_user_content(message.get("content"))}
        else:
            continue  # e.g. a `function` message that follows no `function_call`
        if not converted["content"]:
            continue
        _append_merged(out, converted)
    return "\n\n".join(system), out


def _append_merged(out: list[JSON], message: JSON) -> None:
    """Anthropic wants alternating turns: consecutive same-role messages become one."""
    if out and out[-1]["role"] == message["role"]:
        out[-1]["content"] = _as_blocks(out[-1]["content"]) + _as_blocks(message["content"])
    else:
        out.append(message)


def _as_blocks(content: Any) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content)


def _openai_user_content(content: Any) -> Any:
    if isinstance(content, str) or content is None:
        return content or ""
    blocks: list[JSON] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url = image.get("url", "") if isinstance(image, dict) else str(image)
            blocks.append({"type": "image", "source": _image_source(url)})
        elif kind == "file":
            document = _file_to_document(part.get("file") or {})
            if document is not None:
                blocks.append(document)
    return blocks


def _image_source(url: str) -> JSON:
    if url.startswith("data:"):
        media_type, data = _split_data_url(url)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _split_data_url(url: str) -> tuple[str, str]:
    """`data:image/png;base64,AAAA` -> ("image/png", "AAAA")."""
    header, _, data = url.partition(",")
    media_type = header.removeprefix("data:").split(";")[0] or "image/png"
    return media_type, data


def _file_to_document(file: JSON) -> JSON | None:
    data_url = file.get("file_data")
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        return None
    media_type, data = _split_data_url(data_url)
    document: JSON = {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }
    if file.get("filename"):
        document["title"] = file["filename"]
    return document


def _openai_assistant_blocks(message: JSON, function_id: str | None = None) -> list[JSON]:
    blocks: list[JSON] = []
    text = _content_text(message.get("content")) or message.get("refusal") or ""
    if text:
        blocks.append({"type": "text", "text": text})
    calls = list(message.get("tool_calls") or [])
    if message.get("function_call"):
        calls.append({"id": function_id, "function": message["function_call"]})
    for call in calls:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_tool_use_id(),
                "name": function.get("name"),
                "input": _parse_arguments(function.get("arguments")),
            }
        )
    return blocks


def _parse_arguments(arguments: Any) -> JSON:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _openai_tools_to_anthropic(body: JSON) -> list[JSON]:
    tools_in = body.get("tools") or []
    functions = [t.get("function") or {} for t in tools_in if t.get("type") == "function"]
    functions += list(body.get("functions") or [])
    tools: list[JSON] = []
    for function in functions:
        tool: JSON = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            tool["description"] = function["description"]
        tools.append(tool)
    return tools


def _openai_tool_choice_to_anthropic(choice: Any) -> JSON | None:
    if isinstance(choice, str):
        kind = {"auto": "auto", "none": "none", "required": "any"}.get(choice)
        return {"type": kind} if kind else None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if name:
            return {"type": "tool", "name": name}
    return None


# ---- responses -------------------------------------------------------------------------------


def openai_response_to_anthropic(body: JSON, *, model: str | None = None) -> JSON:
    """A chat.completion as a Messages response."""
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    finish = choices[0].get("finish_reason")
    return {
        "id": anthropic_message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model or body.get("model") or "",
        "content": _openai_assistant_blocks(message),
        "stop_reason": OPENAI_TO_ANTHROPIC_STOP.get(finish or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage_dict(usage_from_openai(body)),
    }


def anthropic_response_to_openai(
    body: JSON, *, model: str | None = None, legacy_functions: bool = False
) -> JSON:
    """A Messages response as a chat.completion; with `legacy_functions`, the first tool call as
    `message.function_call` and `finish_reason: "function_call"`, as OpenAI answers `functions`."""
    texts: list[str] = []
    tool_calls: list[JSON] = []
    for block in body.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    stop = body.get("stop_reason") or "end_turn"
    finish = ANTHROPIC_TO_OPENAI_FINISH.get(stop, "stop")
    if legacy_functions:
        if tool_calls:
            message["function_call"] = tool_calls[0]["function"]
        if finish == "tool_calls":
            finish = "function_call"
    elif tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": openai_completion_id(body.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or body.get("model") or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": openai_usage_dict(usage_from_anthropic(body)),
    }


# ---- error bodies ----------------------------------------------------------------------------

_ANTHROPIC_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_OPENAI_TYPE_BY_ANTHROPIC = {
    "invalid_request_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
}
_OPENAI_CODE_BY_STATUS = {
    401: "invalid_api_key",
    404: "model_not_found",
    429: "rate_limit_exceeded",
}


def error_message(body: Any) -> str:
    """The human message inside an OpenAI or Anthropic error body (or the raw text)."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
        return json.dumps(body)[:500]
    return str(body or "")[:500]


def anthropic_error_to_openai(body: Any, status: int) -> JSON:
    """An Anthropic error body as OpenAI's `{"error": {message, type, param, code}}`."""
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    kind = kind or _ANTHROPIC_TYPE_BY_STATUS.get(status, "api_error")
    message = error_message(body)
    code = _OPENAI_CODE_BY_STATUS.get(status)
    if is_context_length_message(message):
        code = "context_length_exceeded"
    return {
        "error": {
            "message": message,
            "type": _OPENAI_TYPE_BY_ANTHROPIC.get(kind, "server_error" if status >= 500 else kind),
            "param": None,
            "code": code,
        }
    }


def openai_error_to_anthropic(body: Any, status: int) -> JSON:
    """An OpenAI error body as Anthropic's `{"type": "error", "error": {type, message}}`."""
    kind = _ANTHROPIC_TYPE_BY_STATUS.get(status)
    if kind is None:
        kind = "api_error" if status >= 500 else "invalid_request_error"
    return {"type": "error", "error": {"type": kind, "message": error_message(body)}}


_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "context limit",
    "prompt is too long",
    "too many tokens",
    "maximum context",
    "input is too long",
    "reduce the length",
)


def is_context_length_message(text: str) -> bool:
    """True when an upstream error text says the input does not fit (SPEC §2.5.1)."""
    lowered = text.lower()
    return any(marker in lowered for marker in _CONTEXT_MARKERS)

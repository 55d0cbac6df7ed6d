"""OpenAI Chat Completions <-> Anthropic Messages, both directions (SPEC §3).

Pure functions over JSON-shaped dicts: requests, responses and error bodies. Streams live in
`streams.py`. Parameters with no counterpart on the other side are dropped (Anthropic `top_k`,
thinking, cache_control; OpenAI `n`, penalties, logprobs, `service_tier`, ...), but content is
never dropped: a part with no faithful form on the other side raises `Untranslatable`, which the
gateway answers as a 400 naming the part, rather than sending the upstream a shorter prompt.

Choices worth knowing (docs/translation.md has the full tables):
- OpenAI `temperature` runs 0..2, Anthropic's 0..1: values above 1 are capped at 1.
- Anthropic requires `max_tokens`; an OpenAI request without one gets `default_max_tokens`.
- OpenAI bodies get `max_completion_tokens` (what current OpenAI models require); pass
  `max_tokens_field="max_tokens"` for older OpenAI-compatible servers.
- OpenAI system/developer messages become Anthropic's top-level `system`: a string when there is
  one text, else a list of text blocks (nothing is joined, so no separator is invented).
- Structured outputs: `response_format` json_schema <-> `output_config.format`; effort:
  `reasoning_effort` <-> `output_config.effort` (tables below).
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

# Tool choices named by a word, both ways (a named tool is an object on either side).
ANTHROPIC_TO_OPENAI_CHOICE: dict[str, str] = {"auto": "auto", "none": "none", "any": "required"}
OPENAI_TO_ANTHROPIC_CHOICE: dict[str, str] = {"auto": "auto", "none": "none", "required": "any"}

# Effort, both ways. Anthropic has no `none` or `minimal`: the nearest level is `low`.
OPENAI_TO_ANTHROPIC_EFFORT: dict[str, str] = {
    "none": "low",
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "max",
}
ANTHROPIC_TO_OPENAI_EFFORT: dict[str, str] = {
    level: level for level in ("low", "medium", "high", "xhigh", "max")
}

# Anthropic requires `max_tokens`: what an OpenAI request that sets no limit gets, unless the
# catalog model names its own (`max_output_tokens`).
DEFAULT_MAX_TOKENS = 4096
# OpenAI requires a name for a json_schema response format; Anthropic's format has none.
RESPONSE_FORMAT_NAME = "response"


class Untranslatable(ValueError):
    """A request part with no faithful form in the other format. The gateway refuses it (400,
    `param` naming the part) instead of sending the upstream a request that lost it.

    The part's path is built on the way up (`within`), by the loops over messages and parts that
    catch it: only a refused request pays for it, not every message of every translated chat."""

    def __init__(self, reason: str, *, param: str = "") -> None:
        super().__init__(f"{param}: {reason}" if param else reason)
        self.reason = reason
        self.param = param

    def within(self, prefix: str) -> Untranslatable:
        """The same refusal, for a part found inside `prefix` (`messages[3]`, `.content`)."""
        return Untranslatable(self.reason, param=prefix + self.param)


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


# ---- JSON schemas ----------------------------------------------------------------------------


def meets_openai_strict_rules(schema: Any) -> bool:
    """True when OpenAI's strict mode accepts `schema` as far as object shapes go: every object
    closed (`additionalProperties: false`) and listing all its properties in `required`.
    Anthropic's structured outputs allow optional properties; OpenAI's strict mode does not."""
    if isinstance(schema, list):
        return all(meets_openai_strict_rules(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or []) != set(properties):
            return False
    nested = [schema.get(key) for key in ("items", "anyOf", "allOf", "oneOf", "prefixItems")]
    nested += list((schema.get("properties") or {}).values())
    nested += list((schema.get("$defs") or schema.get("definitions") or {}).values())
    return all(meets_openai_strict_rules(item) for item in nested if item is not None)


# ---- Anthropic request -> OpenAI request -------------------------------------------------------


def anthropic_request_to_openai(
    body: JSON, *, max_tokens_field: str = "max_completion_tokens"
) -> JSON:
    """A Messages request as a Chat Completions request; raises `Untranslatable` for content or
    a forced tool that cannot be carried."""
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
    out.update(_anthropic_output_config_to_openai(body.get("output_config")))
    out.update(_anthropic_tools_to_openai(body))
    return out


def _anthropic_output_config_to_openai(config: Any) -> JSON:
    """`output_config.effort` -> `reasoning_effort`; `output_config.format` -> a json_schema
    `response_format`, strict when OpenAI's strict mode can take the schema."""
    if not isinstance(config, dict):
        return {}
    out: JSON = {}
    effort = ANTHROPIC_TO_OPENAI_EFFORT.get(str(config.get("effort")))
    if effort:
        out["reasoning_effort"] = effort
    output_format = config.get("format")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        schema = output_format.get("schema")
        if isinstance(schema, dict):
            spec = {
                "name": RESPONSE_FORMAT_NAME,
                "schema": schema,
                "strict": meets_openai_strict_rules(schema),
            }
            out["response_format"] = {"type": "json_schema", "json_schema": spec}
    return out


def _anthropic_tools_to_openai(body: JSON) -> JSON:
    """`tools`, `tool_choice` and `parallel_tool_calls`. Server tools (no `input_schema`, run by
    Anthropic) do not exist on OpenAI and are left out; forcing one is refused."""
    given = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    tools = [_anthropic_tool_to_openai(t) for t in given if "input_schema" in t]
    out: JSON = {"tools": tools} if tools else {}
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return out
    _check_forced_tool(choice, tools, given)
    converted = _anthropic_tool_choice_to_openai(choice)
    if converted is not None and tools:  # OpenAI refuses a tool_choice without tools
        out["tool_choice"] = converted
    if choice.get("disable_parallel_tool_use") and tools:
        out["parallel_tool_calls"] = False
    return out


def _check_forced_tool(choice: JSON, tools: list[JSON], given: list[JSON]) -> None:
    """Refuse a `tool_choice` that forces a tool the OpenAI request will not have."""
    kind = choice.get("type")
    if kind == "tool":
        name = choice.get("name")
        if name in {t["function"]["name"] for t in tools}:
            return
        server = any(t.get("name") == name for t in given)
        why = "is an Anthropic server tool, which" if server else "is not among the tools that"
        raise Untranslatable(
            f"the forced tool '{name}' {why} this model can be given.", param="tool_choice"
        )
    if kind == "any" and given and not tools:
        raise Untranslatable(
            "'any' forces a tool call, but the only tools given are Anthropic server tools, "
            "which this model cannot be given.",
            param="tool_choice",
        )


def _anthropic_tool_to_openai(tool: JSON) -> JSON:
    function: JSON = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _anthropic_tool_choice_to_openai(choice: JSON) -> Any:
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return ANTHROPIC_TO_OPENAI_CHOICE.get(kind or "")


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
    for index, message in enumerate(body.get("messages") or []):
        role = message.get("role")
        content = message.get("content")
        if role == "assistant":
            messages.append(_anthropic_assistant_to_openai(content))
        elif role == "system":  # a system message among the turns stays where it is
            text = _system_text(content)
            if text:
                messages.append({"role": "system", "content": text})
        else:
            try:
                messages.extend(_anthropic_user_to_openai(content))
            except Untranslatable as error:
                raise error.within(f"messages.{index}.content") from None
    return messages


def _anthropic_assistant_to_openai(content: Any) -> JSON:
    """Text and tool calls; thinking and server-tool blocks have no OpenAI form and are left out
    (they are the model's own working, not the user's content)."""
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
    for index, block in enumerate(content or []):
        try:
            if block.get("type") == "tool_result":
                text, extra = _tool_result_content(block)
                tool_messages.append(
                    {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
                )
                parts.extend(extra)  # OpenAI tool messages carry text only
            else:
                parts.extend(_anthropic_block_to_openai_parts(block))
        except Untranslatable as error:
            raise error.within(f".{index}") from None
    out = list(tool_messages)
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _tool_result_content(block: JSON) -> tuple[str, list[JSON]]:
    """The tool message's text (text blocks joined by newlines) and the result's other blocks
    as parts for the user message after it."""
    content = block.get("content")
    texts: list[str] = []
    extra: list[JSON] = []
    if isinstance(content, str):
        texts.append(content)
    else:
        for index, item in enumerate(content or []):
            if item.get("type") == "text":
                texts.append(item.get("text", ""))
            else:
                try:
                    extra.extend(_anthropic_block_to_openai_parts(item))
                except Untranslatable as error:
                    raise error.within(f".content.{index}") from None
    text = "\n".join(texts)
    if block.get("is_error") and not text.startswith("Error"):
        text = f"Error: {text}"
    return text, extra


def _anthropic_block_to_openai_parts(block: JSON) -> list[JSON]:
    """A user content block as OpenAI content parts, or `Untranslatable`."""
    kind = block.get("type")
    if kind == "text":
        return [{"type": "text", "text": block.get("text", "")}]
    if kind == "image":
        return [_anthropic_image_to_openai(block)]
    if kind == "document":
        return _anthropic_document_to_openai(block)
    raise Untranslatable(
        f"'{kind}' blocks cannot be sent to this model; OpenAI Chat Completions has no counterpart."
    )


def _anthropic_image_to_openai(block: JSON) -> JSON:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = source.get("url", "")
    else:
        raise Untranslatable(
            f"an image with a '{source.get('type')}' source cannot be sent to this model; send "
            "it as base64 or a URL."
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _anthropic_document_to_openai(block: JSON) -> list[JSON]:
    """PDF data -> a `file` part; plain text and content documents -> their text and images.
    OpenAI file parts take data or an OpenAI file id, never a URL or an Anthropic file id."""
    source = block.get("source") or {}
    kind = source.get("type")
    if kind == "base64":
        data_url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        name = block.get("title") or "document.pdf"
        return [{"type": "file", "file": {"file_data": data_url, "filename": name}}]
    if kind == "text":
        return [{"type": "text", "text": source.get("data", "")}]
    if kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [{"type": "text", "text": inner}]
        parts: list[JSON] = []
        for index, item in enumerate(inner or []):
            try:
                parts.extend(_anthropic_block_to_openai_parts(item))
            except Untranslatable as error:
                raise error.within(f".source.content.{index}") from None
        return parts
    raise Untranslatable(
        f"a document with a '{kind}' source cannot be sent to this model; OpenAI file parts "
        "take the file's data, so send the document as base64."
    )


# ---- OpenAI request -> Anthropic request -------------------------------------------------------


def openai_request_to_anthropic(
    body: JSON, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> JSON:
    """A Chat Completions request as a Messages request; raises `Untranslatable` for content,
    tools or a tool choice that cannot be carried."""
    system, messages = _openai_messages_to_anthropic(body.get("messages") or [])
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out: JSON = {
        "model": body.get("model"),
        "messages": messages,
        "max_tokens": max_tokens or default_max_tokens,
    }
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    out.update(_openai_sampling(body))
    stop_sequences = _stop_sequences(body.get("stop"))
    if stop_sequences:
        out["stop_sequences"] = stop_sequences
    if body.get("stream"):
        out["stream"] = True
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    output_config = _openai_output_config(body)
    if output_config:
        out["output_config"] = output_config
    out.update(_openai_tool_fields(body))
    return out


def _openai_sampling(body: JSON) -> JSON:
    """`temperature` (capped at Anthropic's 1) and `top_p`, of which Claude models since Opus 4.1
    take only one (a 400: "cannot both be specified"), while OpenAI clients often send both.
    One left at the value that changes nothing (1, as Anthropic defaults both) is dropped; when
    both narrow the sampling, `temperature` is kept, as Anthropic advises altering only it."""
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if temperature is not None:
        temperature = min(float(temperature), 1.0)
    if temperature is None or top_p is None:
        given = {"temperature": temperature, "top_p": top_p}
        return {name: value for name, value in given.items() if value is not None}
    if temperature == 1.0 and top_p != 1:
        return {"top_p": top_p}
    return {"temperature": temperature}


def _openai_output_config(body: JSON) -> JSON:
    """`reasoning_effort` -> `effort`; a json_schema `response_format` -> `format`. JSON mode
    (`json_object`) has no schema to give, and Anthropic has no schema-less JSON mode: dropped."""
    config: JSON = {}
    effort = OPENAI_TO_ANTHROPIC_EFFORT.get(str(body.get("reasoning_effort")))
    if effort:
        config["effort"] = effort
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            config["format"] = {"type": "json_schema", "schema": schema}
    return config


def _openai_tool_fields(body: JSON) -> JSON:
    """`tools` and `tool_choice`, with `disable_parallel_tool_use` for `parallel_tool_calls:
    false` and for legacy `functions` (whose answer holds one call)."""
    tools = _openai_tools_to_anthropic(body)
    raw_choice = body.get("tool_choice", body.get("function_call"))
    if isinstance(raw_choice, dict) and raw_choice.get("type") == "allowed_tools":
        tools, choice = _allowed_tools(raw_choice, tools)
    else:
        choice = _openai_tool_choice_to_anthropic(raw_choice)
    single = body.get("parallel_tool_calls") is False or uses_legacy_functions(body)
    if single and tools and (choice is None or choice.get("type") != "none"):
        choice = dict(choice or {"type": "auto"}, disable_parallel_tool_use=True)
    out: JSON = {"tools": tools} if tools else {}
    if choice is not None and tools:  # without tools a tool choice means nothing
        out["tool_choice"] = choice
    return out


def _text_parts(content: Any) -> list[str]:
    """The texts of a string or a list of text/refusal parts, one per part. Blank ones are left
    out: Anthropic refuses a text block that is empty or only whitespace (a model's `"\n\n"`
    before its tool calls, say), and it says nothing."""
    if isinstance(content, str):
        return [content] if _has_text(content) else []
    if not isinstance(content, list):
        return []
    texts = [
        p.get("text", "") or p.get("refusal", "")
        for p in content
        if p.get("type") in ("text", "refusal")
    ]
    return [text for text in texts if _has_text(text)]


def _has_text(text: Any) -> bool:
    return isinstance(text, str) and not text.isspace() and text != ""


def _stop_sequences(stop: Any) -> list[Any]:
    """OpenAI's `stop` as Anthropic's `stop_sequences`. Empty strings, which stop nothing, are
    left out; one of only whitespace (`"\n"`) is refused by Anthropic, so it is refused here,
    naming `stop`, before any upstream is called."""
    sequences = [stop] if isinstance(stop, str) else list(stop or [])
    for index, sequence in enumerate(sequences):
        if isinstance(sequence, str) and sequence.isspace():
            raise Untranslatable(
                f"{sequence!r}: Anthropic models take no stop sequence made only of whitespace.",
                param="stop" if isinstance(stop, str) else f"stop[{index}]",
            )
    return [sequence for sequence in sequences if sequence != ""]


def _text_content(content: Any) -> Any:
    """Text parts as Anthropic content: one string, or text blocks when there are several
    (kept apart rather than joined with a separator of our choosing)."""
    texts = _text_parts(content)
    if len(texts) <= 1:
        return texts[0] if texts else ""
    return [{"type": "text", "text": text} for text in texts]


def _openai_messages_to_anthropic(messages: list[JSON]) -> tuple[list[JSON], list[JSON]]:
    """Anthropic's `system` text blocks and turns."""
    system: list[JSON] = []
    out: list[JSON] = []
    function_id: str | None = None  # the tool_use id of the last assistant `function_call`
    for index, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system += [{"type": "text", "text": t} for t in _text_parts(message.get("content"))]
            continue
        try:
            if role == "assistant":
                function_id = new_tool_use_id() if message.get("function_call") else None
                blocks = _openai_assistant_blocks(message, function_id)
                converted = {"role": "assistant", "content": blocks}
            elif role == "function" and function_id is not None:  # legacy: answers that call
                block = _tool_result(function_id, message.get("content"))
                converted = {"role": "user", "content": [block]}
                function_id = None
            elif role == "tool":
                block = _tool_result(message.get("tool_call_id"), message.get("content"))
                converted = {"role": "user", "content": [block]}
            elif role == "user":
                converted = {"role": "user", "content": _openai_user_content(message)}
            else:
                continue  # e.g. a `function` message that follows no `function_call`
        except Untranslatable as error:
            raise error.within(f"messages[{index}]") from None
        if not converted["content"]:
            continue
        _append_merged(out, converted)
    return system, out


def _tool_result(tool_use_id: Any, content: Any) -> JSON:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": _text_content(content)}


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


def _openai_user_content(message: JSON) -> Any:
    """A user turn's content; blank text (which Anthropic refuses) is left out."""
    content = message.get("content")
    if isinstance(content, str) or content is None:
        return content if _has_text(content) else ""
    blocks = []
    for index, part in enumerate(content):
        if part.get("type") == "text" and not _has_text(part.get("text")):
            continue
        try:
            blocks.append(_openai_part_to_block(part))
        except Untranslatable as error:
            raise error.within(f".content[{index}]") from None
    return blocks


def _openai_part_to_block(part: JSON) -> JSON:
    """One user content part as an Anthropic block, or `Untranslatable`."""
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url") or {}
        url = image.get("url", "") if isinstance(image, dict) else str(image)
        return {"type": "image", "source": _image_source(url)}
    if kind == "file":
        return _file_to_document(part.get("file") or {})
    why = "no audio input" if kind == "input_audio" else "no counterpart"
    raise Untranslatable(
        f"'{kind}' content parts cannot be sent to this model; Anthropic Messages has {why}."
    )


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


def _file_to_document(file: JSON) -> JSON:
    """`file_data` (a data URL, or bare base64, which Chat Completions takes as a PDF) -> a
    base64 document. A `file_id` names a file in OpenAI's store, which Anthropic cannot read."""
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        raise Untranslatable(
            "a file given only by file_id cannot be sent to this model (the id names a file "
            "stored at OpenAI); send the file's content as file_data instead."
        )
    if data.startswith("data:"):
        media_type, data = _split_data_url(data)
    else:
        media_type = "application/pdf"
    document: JSON = {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }
    if file.get("filename"):
        document["title"] = file["filename"]
    return document


def _openai_assistant_blocks(message: JSON, function_id: str | None = None) -> list[JSON]:
    """Text blocks (one per part, the refusal when there is no text) and tool_use blocks."""
    texts = _text_parts(message.get("content"))
    if not texts and message.get("refusal"):
        texts = [message["refusal"]]
    blocks: list[JSON] = [{"type": "text", "text": text} for text in texts]
    calls = list(message.get("tool_calls") or [])
    if message.get("function_call"):
        calls.append({"id": function_id, "type": "function", "function": message["function_call"]})
    for index, call in enumerate(calls):
        if call.get("type", "function") != "function":
            raise Untranslatable(
                f"'{call.get('type')}' tool calls have no Anthropic counterpart.",
                param=f".tool_calls[{index}]",
            )
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
    """Function tools (and legacy `functions`) as Anthropic tools; `custom` tools, whose input
    is free text, have no Anthropic counterpart."""
    functions: list[JSON] = []
    for index, tool in enumerate(body.get("tools") or []):
        if tool.get("type", "function") != "function":
            raise Untranslatable(
                f"'{tool.get('type')}' tools have no Anthropic counterpart.",
                param=f"tools[{index}]",
            )
        functions.append(tool.get("function") or {})
    functions += list(body.get("functions") or [])
    return [_function_to_tool(function) for function in functions]


def _function_to_tool(function: JSON) -> JSON:
    tool: JSON = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        tool["description"] = function["description"]
    if isinstance(function.get("strict"), bool):
        tool["strict"] = function["strict"]
    return tool


def _allowed_tools(choice: JSON, tools: list[JSON]) -> tuple[list[JSON], JSON]:
    """`allowed_tools`: only the allowed tools are sent; `required` -> `any`, `auto` -> `auto`."""
    allowed = choice.get("allowed_tools") or {}
    names = {
        (entry.get("function") or {}).get("name") or entry.get("name")
        for entry in allowed.get("tools") or []
        if isinstance(entry, dict)
    }
    kept = [tool for tool in tools if tool["name"] in names]
    if not kept:
        raise Untranslatable(
            "allowed_tools names none of the request's function tools.", param="tool_choice"
        )
    return kept, {"type": "any" if allowed.get("mode") == "required" else "auto"}


def _openai_tool_choice_to_anthropic(choice: Any) -> JSON | None:
    if isinstance(choice, str):
        kind = OPENAI_TO_ANTHROPIC_CHOICE.get(choice)
        return {"type": kind} if kind else None
    if not isinstance(choice, dict):
        return None
    if choice.get("type") == "custom":
        raise Untranslatable("custom tools have no Anthropic counterpart.", param="tool_choice")
    name = (choice.get("function") or {}).get("name") or choice.get("name")
    return {"type": "tool", "name": name} if name else None


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
        "stop_reason": anthropic_stop_reason(finish, refused=bool(message.get("refusal"))),
        "stop_sequence": None,
        "usage": anthropic_usage_dict(usage_from_openai(body)),
    }


def anthropic_stop_reason(finish: str | None, *, refused: bool) -> str:
    """Anthropic's stop reason for OpenAI's `finish_reason`, streamed or not. An answer that is a
    refusal and did not stop for a reason of its own (length, tools, filter) is Anthropic's
    `refusal`: ended with `stop`, with none, or with a reason Anthropic has no name for."""
    stop = OPENAI_TO_ANTHROPIC_STOP.get(finish or "stop", "end_turn")
    return "refusal" if refused and stop == "end_turn" else stop


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

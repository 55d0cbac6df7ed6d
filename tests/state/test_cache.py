"""SPEC §2.5 response cache: keys, client directives, storage, expiry and isolation."""

from __future__ import annotations

import asyncio

import pytest

from concord.state import (
    CachedResponse,
    MemoryState,
    ResponseCache,
    StateBackend,
    cache_directives,
    cache_key,
    should_bypass,
)

BODY = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0,
    "max_tokens": 50,
}


def key(body: dict | None = None, *, model: str = "gpt-4o", endpoint: str = "chat", ws="acme"):
    return cache_key(model, endpoint, BODY if body is None else body, ws)


@pytest.mark.parametrize(
    "same",
    [
        {**BODY, "stream": True, "stream_options": {"include_usage": True}},
        {**BODY, "user": "someone", "metadata": {"trace": "x"}, "store": True},
        {**BODY, "temperature": 0.0},
        {**BODY, "model": "what-the-client-typed"},  # the resolved model is what counts
        dict(reversed(BODY.items())),
    ],
    ids=["stream", "bookkeeping", "float-zero", "requested-model", "key-order"],
)
def test_fields_that_do_not_change_the_answer_share_an_entry(same: dict) -> None:
    assert key(same) == key()


@pytest.mark.parametrize(
    "different",
    [
        {**BODY, "messages": [{"role": "user", "content": "hello"}]},
        {**BODY, "temperature": 0.2},
        {**BODY, "max_tokens": 51},
        {**BODY, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {**BODY, "seed": 7},
        {**BODY, "n": 2},
    ],
    ids=["messages", "temperature", "max_tokens", "tools", "seed", "n"],
)
def test_fields_that_change_the_answer_get_their_own_entry(different: dict) -> None:
    assert key(different) != key()


def test_model_endpoint_and_workspace_are_part_of_the_key() -> None:
    assert key(model="claude-sonnet") != key()
    assert key(endpoint="messages") != key()
    assert key(ws="other") != key()
    assert key(ws=None) == key(ws=None)  # scope: global shares across workspaces
    assert key(ws=None) != key()


def test_workspace_names_cannot_forge_another_scope() -> None:
    assert cache_key("m", "chat", BODY, "a:b") != cache_key("m", "chat", BODY, "a")
    assert key(ws="a:b").count(":") == 3  # v1:ws:<escaped name>:<digest>


@pytest.mark.parametrize(
    ("headers", "read", "write"),
    [
        ({}, True, True),
        ({"cache-control": "max-age=0"}, True, True),
        ({"cache-control": "no-cache"}, False, True),
        ({"cache-control": "No-Cache, max-age=0"}, False, True),
        ({"pragma": "no-cache"}, False, True),
        ({"cache-control": "no-store"}, False, False),
        ({"cache-control": "private, no-store"}, False, False),
    ],
)
def test_client_cache_control(headers: dict, read: bool, write: bool) -> None:
    assert cache_directives(headers).read is read
    assert cache_directives(headers).write is write
    assert should_bypass(headers) is not read


async def test_stored_response_comes_back_intact(backend: StateBackend) -> None:
    cache = ResponseCache(backend)
    body = b'{"id":"chatcmpl-1","choices":[{"message":{"content":"line1\\nline2"}}]}'
    usage = {"input_tokens": 12, "output_tokens": 3}
    await cache.put(key(), CachedResponse(body, usage, "gpt-4o", "openai"), ttl=60)
    hit = await cache.get(key())
    assert hit is not None
    assert (hit.body, dict(hit.usage), hit.model, hit.provider) == (body, usage, "gpt-4o", "openai")
    assert hit.stored_at > 0
    assert await cache.get(key(ws="other")) is None


async def test_entries_expire_after_their_ttl(backend: StateBackend) -> None:
    cache = ResponseCache(backend)
    await cache.put(key(), CachedResponse(b"{}"), ttl=0.05)
    assert await cache.get(key()) is not None
    await asyncio.sleep(0.12)
    assert await cache.get(key()) is None


async def test_a_corrupt_entry_reads_as_a_miss(backend: StateBackend) -> None:
    await backend.cache_set("resp:" + key(), b"not a cache entry", 60)
    assert await ResponseCache(backend).get(key()) is None


async def test_memory_cache_keeps_the_most_recently_used_entries() -> None:
    backend = MemoryState(cache_max_entries=2)
    await backend.cache_set("a", b"1", 60)
    await backend.cache_set("b", b"2", 60)
    assert await backend.cache_get("a") == b"1"  # a is now more recent than b
    await backend.cache_set("c", b"3", 60)
    assert await backend.cache_get("b") is None
    assert await backend.cache_get("a") == b"1"
    assert await backend.cache_get("c") == b"3"


async def test_memory_cache_is_bounded_in_bytes_too() -> None:
    backend = MemoryState(cache_max_entries=100, cache_max_bytes=10)
    await backend.cache_set("a", b"12345", 60)
    await backend.cache_set("b", b"12345", 60)
    await backend.cache_set("c", b"123", 60)  # 13 bytes: the oldest entry goes
    assert await backend.cache_get("a") is None
    assert await backend.cache_get("b") == b"12345"
    await backend.cache_set("huge", b"x" * 11, 60)  # larger than the whole cache: not stored
    assert await backend.cache_get("huge") is None
    assert await backend.cache_get("c") == b"123"

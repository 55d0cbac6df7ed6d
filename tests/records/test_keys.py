"""SPEC §2.8: client keys are shown once, stored hashed, and revoked everywhere within a second."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from concord.records.db import Database
from concord.records.errors import InvalidRecord, KeyNotFound
from concord.records.keys import KeyStore, generate_key, hash_key
from concord.records.tables import api_keys


def test_generated_keys_have_the_documented_shape() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(re.fullmatch(r"ck-[A-Za-z0-9_-]{40}", k) for k in keys)


async def test_created_key_is_stored_only_as_its_hash(database: Database) -> None:
    store = KeyStore(database)
    record, plaintext = await store.create("acme", "ci", user="alice", tags=["batch"])

    async with database.connect() as conn:
        row = (await conn.execute(sa.select(api_keys))).mappings().one()
    assert row["sha256"] == hash_key(plaintext)
    assert plaintext not in {str(v) for v in row.values()}
    assert record.prefix == plaintext[:7] + "…"


async def test_lookup_returns_the_principal_of_an_active_key(database: Database) -> None:
    async with KeyStore(database) as store:
        record, plaintext = await store.create("acme", "ci", user="alice", tags=["batch"])
        principal = await store.lookup(hash_key(plaintext))

    assert principal is not None
    assert (principal.workspace, principal.key_name, principal.key_id, principal.user) == (
        "acme",
        "ci",
        record.id,
        "alice",
    )
    assert principal.tags == frozenset({"batch"})


async def test_unknown_key_is_not_found(database: Database) -> None:
    async with KeyStore(database) as store:
        assert await store.lookup(hash_key("ck-nope")) is None


async def test_list_never_shows_the_key_or_its_hash(database: Database) -> None:
    store = KeyStore(database)
    _, first = await store.create("acme", "one")
    _, second = await store.create("other", "two")

    listed = [r.to_json() for r in await store.list()]
    only_acme = await store.list(workspace="acme")

    text = repr(listed)
    for key in (first, second):
        assert key not in text and hash_key(key) not in text
    assert {r["name"] for r in listed} == {"one", "two"}
    assert [r.name for r in only_acme] == ["one"]


async def test_revoked_key_stops_working_within_a_second_in_another_process(
    database: Database,
) -> None:
    admin = KeyStore(database)
    async with KeyStore(database, refresh_interval=0.5) as gateway:
        record, plaintext = await admin.create("acme", "ci")
        digest = hash_key(plaintext)
        assert await gateway.lookup(digest) is not None  # cached from now on

        await admin.revoke(record.id)
        revoked_at = time.monotonic()
        while await gateway.lookup(digest) is not None:
            assert time.monotonic() - revoked_at < 1.0, "revoked key still accepted after 1 s"
            await asyncio.sleep(0.02)

    assert (await admin.get(record.id)).status() == "revoked"


async def test_cached_lookups_need_no_database(database: Database) -> None:
    async with KeyStore(database, refresh_interval=60) as store:
        _, plaintext = await store.create("acme", "ci")
        await store.lookup(hash_key(plaintext))
        await database.close()  # any query would now have to reconnect; none is made
        calls = 0

        @sa.event.listens_for(database.engine.sync_engine, "before_cursor_execute")
        def count(*_: object) -> None:
            nonlocal calls
            calls += 1

        for _ in range(100):
            assert await store.lookup(hash_key(plaintext)) is not None
        assert calls == 0


async def test_key_created_elsewhere_works_after_a_negative_lookup(database: Database) -> None:
    admin = KeyStore(database)
    async with KeyStore(database, refresh_interval=0.2, negative_ttl=0.3) as gateway:
        plaintext = "ck-" + "x" * 40
        assert await gateway.lookup(hash_key(plaintext)) is None  # negatively cached now
        _, plaintext = await admin.create("acme", "late")
        deadline = time.monotonic() + 1.0
        while await gateway.lookup(hash_key(plaintext)) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)


async def test_expired_key_is_refused_at_lookup_time(database: Database) -> None:
    async with KeyStore(database) as store:
        record, plaintext = await store.create(
            "acme", "short", expires_at=datetime.now(UTC) + timedelta(seconds=0.3)
        )
        assert await store.lookup(hash_key(plaintext)) is not None
        await asyncio.sleep(0.35)
        assert await store.lookup(hash_key(plaintext)) is None
    assert (await store.get(record.id)).status() == "expired"


async def test_revoking_an_unknown_key_says_so(database: Database) -> None:
    with pytest.raises(KeyNotFound):
        await KeyStore(database).revoke("key_missing")


async def test_revoke_is_idempotent(database: Database) -> None:
    store = KeyStore(database)
    record, _ = await store.create("acme", "ci")
    first = await store.revoke(record.id)
    second = await store.revoke(record.id)
    assert first.revoked_at == second.revoked_at is not None


@pytest.mark.parametrize(("workspace", "name"), [("", "ci"), ("acme", "  "), ("acme", "x" * 201)])
async def test_blank_or_oversized_names_are_rejected(
    database: Database, workspace: str, name: str
) -> None:
    with pytest.raises(InvalidRecord):
        await KeyStore(database).create(workspace, name)


async def test_list_filters_by_user_and_workspace(database: Database) -> None:
    store = KeyStore(database)
    await store.create("acme", "a1", user="alice")
    await store.create("globex", "a2", user="alice")
    await store.create("acme", "b1", user="bob")
    await store.create("acme", "nobody")

    assert {r.name for r in await store.list(user="alice")} == {"a1", "a2"}
    assert [r.name for r in await store.list("acme", user="alice")] == ["a1"]
    assert {r.name for r in await store.list("acme")} == {"a1", "b1", "nobody"}
    assert await store.list(user="carol") == []


async def test_revoking_a_user_revokes_each_of_their_active_keys_at_once(
    database: Database,
) -> None:
    async with KeyStore(database, refresh_interval=60) as store:  # no poll helps here
        first, first_key = await store.create("acme", "a1", user="alice")
        second, second_key = await store.create("globex", "a2", user="alice")
        _, bob_key = await store.create("acme", "b1", user="bob")
        earlier = await store.revoke((await store.create("acme", "old", user="alice"))[0].id)
        for key in (first_key, second_key, bob_key):
            assert await store.lookup(hash_key(key)) is not None

        revoked = await store.revoke_user("alice")

        assert {r.id for r in revoked} == {first.id, second.id}  # not the one revoked before
        assert {r.status() for r in revoked} == {"revoked"}
        assert await store.lookup(hash_key(first_key)) is None
        assert await store.lookup(hash_key(second_key)) is None
        assert await store.lookup(hash_key(bob_key)) is not None
        assert (await store.get(earlier.id)).revoked_at == earlier.revoked_at
        with pytest.raises(KeyNotFound, match="no active API key of user 'alice'"):
            await store.revoke_user("alice")


async def test_revoking_a_user_in_one_workspace_spares_their_other_keys(
    database: Database,
) -> None:
    store = KeyStore(database)
    in_acme, _ = await store.create("acme", "a1", user="alice")
    in_globex, _ = await store.create("globex", "a2", user="alice")

    assert [r.id for r in await store.revoke_user("alice", workspace="globex")] == [in_globex.id]
    assert (await store.get(in_acme.id)).status() == "active"
    with pytest.raises(KeyNotFound, match="in workspace 'globex'"):
        await store.revoke_user("alice", workspace="globex")


async def test_revoking_by_key_value_finds_the_key_by_its_hash(database: Database) -> None:
    async with KeyStore(database, refresh_interval=60) as store:
        record, plaintext = await store.create("acme", "ci", user="alice")
        _, other = await store.create("acme", "ci2", user="alice")
        await store.lookup(hash_key(plaintext))

        revoked = await store.revoke_value(plaintext)
        again = await store.revoke_value(plaintext)  # harmless, as by id

        assert revoked.id == record.id and revoked.status() == "revoked"
        assert again.revoked_at == revoked.revoked_at
        assert await store.lookup(hash_key(plaintext)) is None
        assert await store.lookup(hash_key(other)) is not None


async def test_revoking_an_unknown_key_value_never_repeats_the_value(database: Database) -> None:
    value = "ck-" + "z" * 40
    with pytest.raises(KeyNotFound) as caught:
        await KeyStore(database).revoke_value(value)
    assert value not in str(caught.value) and hash_key(value) not in str(caught.value)


@pytest.mark.parametrize("user", ["", "   "])
async def test_revoking_a_blank_user_is_rejected(database: Database, user: str) -> None:
    with pytest.raises(InvalidRecord):
        await KeyStore(database).revoke_user(user)

"""The live set of provider adapters, kept across config reloads (SPEC §2.2, §4).

`ProviderPool.sync(specs)` is called with every newly compiled graph's providers: an adapter whose
spec is unchanged (compared by value) is kept, with its pooled session and key cooldowns; a new or
changed spec gets a fresh adapter; a removed or replaced adapter is closed after a grace period, so
requests still running on the previous graph finish on it. A fresh adapter for the same upstream
(same type and base_url) takes over the cooldowns of the keys it still lists, by key value.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from concord.engine.graph import ProviderSpec
from concord.providers.anthropic import AnthropicProvider
from concord.providers.azure import AzureProvider
from concord.providers.base import Provider
from concord.providers.keys import KeyRing, key_ring
from concord.providers.mock import MockProvider
from concord.providers.openai import OpenAIProvider

DEFAULT_GRACE = 60.0

_ADAPTERS: dict[str, Callable[[ProviderSpec], Provider]] = {
    "openai": OpenAIProvider,
    "azure": AzureProvider,
    "anthropic": AnthropicProvider,
    "mock": MockProvider,
}


def build_provider(spec: ProviderSpec) -> Provider:
    """The adapter for `spec.type`."""
    try:
        adapter = _ADAPTERS[spec.type]
    except KeyError:
        raise ValueError(f"provider {spec.name!r}: unknown type {spec.type!r}") from None
    return adapter(spec)


class ProviderPool:
    """Adapters by provider name; see the module docstring for the reload rules."""

    def __init__(
        self,
        specs: Mapping[str, ProviderSpec] | None = None,
        *,
        grace: float = DEFAULT_GRACE,
        build: Callable[[ProviderSpec], Provider] = build_provider,
    ) -> None:
        self.grace = grace
        self._build = build
        self._specs: dict[str, ProviderSpec] = {}
        self._providers: dict[str, Provider] = {}
        self._retiring: dict[Provider, str] = {}  # adapter -> its provider name
        # what `unavailable()` asks on every request, looked up once per sync
        self._checks: tuple[tuple[str, Provider, KeyRing | None], ...] = ()
        self._drains: set[asyncio.Task[None]] = set()
        if specs:
            self.sync(specs)

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def __len__(self) -> int:
        return len(self._providers)

    def get(self, name: str) -> Provider:
        """The current adapter of provider `name`, or the retiring one a reload just removed.

        A request decided on the previous graph may reach its next attempt after a reload removed
        its provider (SPEC §4: it finishes on the graph it started with); KeyError only when no
        adapter of that name exists at all.
        """
        provider = self._providers.get(name)
        if provider is not None:
            return provider
        for retiring, retiring_name in reversed(self._retiring.items()):
            if retiring_name == name:
                return retiring
        raise KeyError(name)

    @property
    def providers(self) -> Mapping[str, Provider]:
        return dict(self._providers)

    def unavailable(self) -> Unavailable:
        """Providers with no usable key right now, and the targets whose model every key of
        their provider is cooling down for (`RuntimeView.unavailable_providers`, `cooling_targets`).

        Asked on every request: with no key cooling down each check is a comparison or two
        (`KeyRing.first_healthy`, `KeyRing.cooling_models`), and the usual answer, none, is a
        shared empty set."""
        names: list[str] = []
        targets: list[str] = []
        for name, provider, ring in self._checks:
            if not provider.available:
                names.append(name)
                continue
            cooling = ring.cooling_models() if ring is not None else None
            if cooling:
                targets.extend(f"{name}/{model}" for model in cooling)
        return Unavailable(names, targets) if names or targets else _NONE

    def sync(self, specs: Mapping[str, ProviderSpec]) -> None:
        """Match the pool to `specs`: keep unchanged adapters, build new ones, retire the rest."""
        retired: dict[str, tuple[ProviderSpec, Provider]] = {}
        for name in list(self._providers):
            spec = specs.get(name)
            if spec is not None and _same_adapter(self._specs[name], spec):
                self._specs[name] = spec
                continue
            retired[name] = (self._specs.pop(name), self._providers.pop(name))
        for name, spec in specs.items():
            if name not in self._providers:
                self._providers[name] = self._build(spec)
                self._specs[name] = spec
                if name in retired:
                    _keep_cooldowns(*retired[name], spec, self._providers[name])
        for name, (_, provider) in retired.items():
            self._retire(name, provider)
        self._checks = tuple((name, p, key_ring(p)) for name, p in self._providers.items())

    async def close(self) -> None:
        """Close every adapter now, retiring ones included (server shutdown)."""
        for task in list(self._drains):
            task.cancel()
        providers = [*self._providers.values(), *self._retiring]
        self._checks = ()
        self._providers.clear()
        self._specs.clear()
        self._retiring.clear()
        for provider in providers:
            with contextlib.suppress(Exception):
                await provider.close()

    def _retire(self, name: str, provider: Provider) -> None:
        self._retiring[provider] = name
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a reload outside the server): `close()` will close it
        task = loop.create_task(self._drain(provider))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self, provider: Provider) -> None:
        await asyncio.sleep(self.grace)
        self._retiring.pop(provider, None)
        with contextlib.suppress(Exception):
            await provider.close()


def _same_adapter(running: ProviderSpec, loaded: ProviderSpec) -> bool:
    """Whether `loaded` can keep the adapter built for `running`, with its connection pool and key
    cooldowns: health probes are run from the graph's specs, never by the adapter, so a change
    to `probe` alone does not need a new one."""
    return loaded == running or replace(loaded, probe=None) == replace(running, probe=None)


class Unavailable(frozenset[str]):
    """Names of providers with no usable key; `targets` holds the ids ("provider/model") of
    targets whose upstream model every key of an otherwise usable provider is cooling down for.

    A set of names, as `RuntimeState.view` has always taken, that carries the targets along."""

    targets: frozenset[str]

    def __new__(cls, names: Iterable[str] = (), targets: Iterable[str] = ()) -> Unavailable:
        made = super().__new__(cls, names)
        made.targets = frozenset(targets)
        return made


_NONE = Unavailable()


def _keep_cooldowns(
    running: ProviderSpec, old: Provider, loaded: ProviderSpec, new: Provider
) -> None:
    """A rebuilt adapter of the same upstream keeps the cooldowns of the keys it still lists: a
    reload that adds or removes a key must not hand a benched key straight back to traffic."""
    if (running.type, running.base_url) != (loaded.type, loaded.base_url):
        return  # another upstream may well accept the key
    before, after = key_ring(old), key_ring(new)
    if before is not None and after is not None:
        after.adopt(before)

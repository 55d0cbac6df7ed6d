"""LiteLLM proxy config → concord.yaml text (SPEC §3.1 `concord import litellm`). Pure: no I/O.

What is translated:

    model_list[].model_name                 catalog model (deployments sharing a name = targets)
    litellm_params.model "openai/x"         target `<provider>/x`; azure/<deployment>,
                                            anthropic/..., OpenAI-compatible prefixes (groq...)
    litellm_params.api_key / api_base /     a provider per distinct (type, base, key, version);
      api_version                           `os.environ/VAR` becomes `${VAR}`
    litellm_settings.api_version, then      api_version of an azure deployment without one
      AZURE_API_VERSION in                  (LiteLLM's order); else `${AZURE_API_VERSION}`,
      environment_variables                 named in a comment
    litellm_params.weight                   target weight (with a weighted balance only)
    *_cost_per_token, max_input_tokens      price (USD per 1M tokens), context_window
    router_settings.routing_strategy        balance (simple-shuffle → weighted, latency-based →
                                            least_latency)
    num_retries, timeout / request_timeout  defaults.retry.attempts (retries + 1), defaults.timeout
    fallbacks [{model: [fallbacks]}]        models.<model>.fallbacks
    default_fallbacks                       a catch-all route with those fallbacks
    allowed_fails, cooldown_time            defaults.circuit_breaker
    litellm_settings.cache (+cache_params)  defaults.cache, every request as LiteLLM (`when: {}`;
                                            off when LiteLLM's cache was off),
                                            storage.state from a redis cache
    router_settings.redis_host/port/...     storage.state (the Redis LiteLLM instances share)
    "ollama/x" with api_base                an openai provider at `<api_base>/v1`
    general_settings.master_key             auth.admin_key (no master key: auth.mode open)
    general_settings.database_url           storage.database

Anything else is listed as a YAML comment at the top of the output. A key written inline in the
LiteLLM file is never copied: its provider gets a variable of its own, `${<PROVIDER>_API_KEY}`, so
a key meant for one endpoint is never sent to another, and the comment names it with its provider.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML

ENV_PREFIX = "os.environ/"

# provider prefix → (concord type, default base_url) for OpenAI-compatible services
OPENAI_COMPATIBLE: dict[str, str | None] = {
    "openai": None,
    "text-completion-openai": None,
    "openai_like": None,
    "custom_openai": None,
    "hosted_vllm": None,
    "groq": "https://api.groq.com/openai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "together_ai": "https://api.together.xyz/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "mistral": "https://api.mistral.ai/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "perplexity": "https://api.perplexity.ai",
    "xai": "https://api.x.ai/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "ollama_chat": "http://127.0.0.1:11434/v1",
    "lm_studio": "http://127.0.0.1:1234/v1",
}
DEFAULT_BASES = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
BALANCE = {
    "simple-shuffle": "weighted",
    "latency-based-routing": "least_latency",
    "least-busy": "round_robin",
    "usage-based-routing": "round_robin",
    "usage-based-routing-v2": "round_robin",
}
KNOWN_SECTIONS = (
    "model_list",
    "router_settings",
    "litellm_settings",
    "general_settings",
    "environment_variables",
)
# the variable LiteLLM reads an Azure API version from when the config names none
AZURE_VERSION_VARIABLE = "AZURE_API_VERSION"
AZURE_VERSION_PLACEHOLDER = "${" + AZURE_VERSION_VARIABLE + "}"
# variables the output may name for values it does not copy
OWN_VARIABLES = ("CONCORD_ADMIN_KEY", "DATABASE_URL", "REDIS_PASSWORD", AZURE_VERSION_VARIABLE)


@dataclass(frozen=True)
class _InlineKey:
    """An api_key written in the LiteLLM file: compared by value, never shown (repr hides it)."""

    value: str = field(repr=False)


@dataclass
class _Provider:
    name: str
    type: str
    base_url: str | None
    api_key: str | None  # `${VAR}`; for an inline key, set once every variable name is known
    api_version: str | None
    inline_key_in: list[str] = field(default_factory=list)  # deployments that wrote it inline


@dataclass
class _Conversion:
    notes: list[str] = field(default_factory=list)
    providers: dict[tuple[Any, ...], _Provider] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: set[str] = field(default_factory=set)
    azure_version: str | None = None  # LiteLLM's config-wide default, if it has one
    unversioned: list[str] = field(default_factory=list)  # azure providers given the placeholder


def convert(litellm: dict[str, Any]) -> str:
    """The concord.yaml text equivalent to the LiteLLM proxy config `litellm`."""
    work = _Conversion()
    router = _mapping(litellm.get("router_settings"))
    settings = _mapping(litellm.get("litellm_settings"))
    general = _mapping(litellm.get("general_settings"))
    for section in litellm:
        if section not in KNOWN_SECTIONS:
            work.notes.append(f"{section}: not translated")
    work.azure_version = _azure_default_version(litellm, settings)
    _environment_note(work, _mapping(litellm.get("environment_variables")))
    for index, entry in enumerate(litellm.get("model_list") or []):
        _deployment(work, index, _mapping(entry))
    _name_inline_keys(work, _referenced_variables(litellm) | set(OWN_VARIABLES))
    _note_unversioned(work)
    balance = _balance(work, router.get("routing_strategy"))
    config: dict[str, Any] = {"version": 1}
    config["auth"] = _auth(work, general)
    storage = _storage(work, general, settings, router)
    if storage:
        config["storage"] = storage
    config["providers"] = {p.name: _provider_entry(p) for p in work.providers.values()}
    config["models"] = _models(work, balance)
    _fallbacks(work, config, router, settings)
    config["defaults"] = _defaults(work, router, settings)
    _leftovers(work, router, settings, general)
    return _render(config, work.notes)


# -- model_list --------------------------------------------------------------------------------


def _deployment(work: _Conversion, index: int, entry: dict[str, Any]) -> None:
    name = entry.get("model_name")
    params = _mapping(entry.get("litellm_params"))
    info = _mapping(entry.get("model_info"))
    model = params.get("model")
    where = f"model_list[{index}]"
    if not isinstance(name, str) or not isinstance(model, str):
        work.notes.append(f"{where}: needs model_name and litellm_params.model; skipped")
        return
    if "*" in name or "*" in model:
        work.notes.append(f"{where} ({name}): wildcard routing is not supported; skipped")
        return
    prefix, _, upstream = model.partition("/")
    if not upstream:
        prefix, upstream = ("anthropic" if model.startswith("claude") else "openai"), model
    kind = _kind(prefix)
    if kind is None:
        work.notes.append(f"{where} ({name}): provider '{prefix}' is not supported; skipped")
        return
    base = _value(params.get("api_base")) or OPENAI_COMPATIBLE.get(prefix)
    if prefix in ("ollama", "ollama_chat") and base and not base.rstrip("/").endswith("/v1"):
        base = base.rstrip("/") + "/v1"  # Ollama's OpenAI-compatible API lives under /v1
    if kind == "azure" and not base:
        work.notes.append(f"{where} ({name}): azure needs api_base; skipped")
        return
    key = _key(params.get("api_key"))
    version = _azure_version(work, params) if kind == "azure" else None
    unversioned = kind == "azure" and version is None
    provider = _provider(
        work, kind, prefix, base, key, AZURE_VERSION_PLACEHOLDER if unversioned else version
    )
    _remember(work, provider, where, key, unversioned)
    target: dict[str, Any] = {"target": f"{provider.name}/{upstream}"}
    weight = params.get("weight")
    if isinstance(weight, int | float) and weight > 0:
        target["weight"] = weight
    catalog = work.models.setdefault(name, {"targets": []})
    catalog["targets"].append(target)
    _price(catalog, params, info)
    for unsupported in sorted(
        set(params) - {"model", "api_key", "api_base", "api_version", "weight"} - _PRICE_KEYS
    ):
        work.notes.append(f"{where} ({name}): litellm_params.{unsupported} not translated")


def _kind(prefix: str) -> str | None:
    if prefix in ("azure", "azure_text", "azure_ai"):
        return "azure" if prefix == "azure" else None
    if prefix == "anthropic":
        return "anthropic"
    if prefix in OPENAI_COMPATIBLE:
        return "openai"
    return None


def _key(raw: Any) -> str | _InlineKey | None:
    """`${VAR}` for LiteLLM's `os.environ/VAR`; an inline key stays a value to compare, not copy."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str) and raw.startswith(ENV_PREFIX):
        return _value(raw)
    return _InlineKey(str(raw))


def _environment_note(work: _Conversion, environment: dict[str, Any]) -> None:
    """LiteLLM sets `environment_variables` in its own process; Concord reads its environment,
    so the names are listed for the operator to set (values are not copied: they are often
    keys). AZURE_API_VERSION needs no setting when it became the Azure api_version."""
    used = {AZURE_VERSION_VARIABLE} if work.azure_version else set()
    names = sorted(str(name) for name in environment if name not in used)
    if names:
        work.notes.append(
            f"environment_variables: set {', '.join(names)} in Concord's environment "
            "(values not copied)"
        )


def _azure_default_version(litellm: dict[str, Any], settings: dict[str, Any]) -> str | None:
    """LiteLLM's fallback for a deployment without api_version: `litellm_settings.api_version`
    (it sets `litellm.api_version`), then AZURE_API_VERSION, which the config's
    `environment_variables` section may set."""
    environment = _mapping(litellm.get("environment_variables"))
    return _value(settings.get("api_version")) or _value(environment.get(AZURE_VERSION_VARIABLE))


def _azure_version(work: _Conversion, params: dict[str, Any]) -> str | None:
    """The deployment's api_version, else LiteLLM's config-wide one. None leaves a variable for
    `concord validate` to ask for: LiteLLM's last resort is a built-in that changes by release."""
    return _value(params.get("api_version")) or work.azure_version


def _provider(
    work: _Conversion,
    kind: str,
    prefix: str,
    base: str | None,
    key: str | _InlineKey | None,
    version: str | None,
) -> _Provider:
    identity = (kind, base, key, version)
    found = work.providers.get(identity)
    if found is not None:
        return found
    stem = kind if kind != "openai" or prefix == "openai" else prefix.replace("_", "-")
    names = {p.name for p in work.providers.values()}
    name, n = stem, 2
    while name in names:
        name, n = f"{stem}-{n}", n + 1
    api_key = key if isinstance(key, str) else None
    found = work.providers[identity] = _Provider(name, kind, base, api_key, version)
    return found


def _remember(
    work: _Conversion,
    provider: _Provider,
    where: str,
    key: str | _InlineKey | None,
    unversioned: bool,
) -> None:
    """What the notes need once every provider has its name: inline keys, missing versions."""
    if isinstance(key, _InlineKey):
        provider.inline_key_in.append(where)
    if unversioned and provider.name not in work.unversioned:
        work.unversioned.append(provider.name)


def _name_inline_keys(work: _Conversion, taken: set[str]) -> None:
    """One variable per provider whose key was written inline, named after the provider and
    unlike any other variable in play, so each endpoint's key can be set apart from the rest."""
    for provider in work.providers.values():
        if not provider.inline_key_in:
            continue
        variable = _free_variable(_env_name(provider.name), taken)
        taken.add(variable)
        provider.api_key = _placeholder(variable)
        base = provider.base_url or DEFAULT_BASES.get(provider.type)
        endpoint = f" ({base})" if base else ""
        work.notes.append(
            f"providers.{provider.name}{endpoint}: the api_key written inline in "
            f"{', '.join(provider.inline_key_in)} is not copied: set ${variable} to it"
        )


def _free_variable(stem: str, taken: set[str]) -> str:
    """`<STEM>_API_KEY`, or a `CONCORD_` one when the file already reads that name elsewhere."""
    if f"{stem}_API_KEY" not in taken:
        return f"{stem}_API_KEY"
    variable, n = f"CONCORD_{stem}_API_KEY", 2
    while variable in taken:
        variable, n = f"CONCORD_{stem}_API_KEY_{n}", n + 1
    return variable


def _note_unversioned(work: _Conversion) -> None:
    """Name the variable so the user knows what `concord validate` will ask for, and why."""
    if work.unversioned:
        names = ", ".join(f"providers.{name}" for name in work.unversioned)
        work.notes.append(
            f"{names}: no api_version in litellm_params, litellm_settings or "
            f"environment_variables: set ${AZURE_VERSION_VARIABLE} (e.g. 2024-10-21)"
        )


def _provider_entry(provider: _Provider) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": provider.type}
    base = provider.base_url or DEFAULT_BASES.get(provider.type)
    if base:
        entry["base_url"] = base
    if provider.api_version:
        entry["api_version"] = provider.api_version
    if provider.api_key:
        entry["api_keys"] = [provider.api_key]
    return entry


_PRICE_KEYS = {"input_cost_per_token", "output_cost_per_token", "max_input_tokens"}


def _price(catalog: dict[str, Any], params: dict[str, Any], info: dict[str, Any]) -> None:
    def number(key: str) -> float | None:
        raw = params.get(key, info.get(key))
        return float(raw) if isinstance(raw, int | float) else None

    price = {}
    for key, field_name in (("input_cost_per_token", "input"), ("output_cost_per_token", "output")):
        per_token = number(key)
        if per_token is not None:
            price[field_name] = round(per_token * 1_000_000, 6)  # Concord prices per 1M tokens
    if price and "price" not in catalog:
        catalog["price"] = price
    window = number("max_input_tokens")
    if window and "context_window" not in catalog:
        catalog["context_window"] = int(window)


def _balance(work: _Conversion, strategy: Any) -> str:
    if strategy is None:
        return "weighted"  # LiteLLM's default: simple-shuffle
    balance = BALANCE.get(str(strategy))
    if balance is None:
        work.notes.append(f"router_settings.routing_strategy: '{strategy}' not supported; weighted")
        return "weighted"
    if strategy in ("least-busy", "usage-based-routing", "usage-based-routing-v2"):
        work.notes.append(
            f"router_settings.routing_strategy: '{strategy}' has no equivalent; round_robin used"
        )
    return balance


def _models(work: _Conversion, balance: str) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name, catalog in work.models.items():
        targets = catalog["targets"]
        entry: dict[str, Any] = {}
        weighted = any("weight" in t for t in targets)
        if weighted and len(targets) > 1 and balance != "weighted":
            work.notes.append(
                f"model_list ({name}): litellm_params.weight dropped: balance is {balance}"
            )
            weighted = False
        if weighted:
            entry["targets"] = targets
        else:
            entry["targets"] = [t["target"] for t in targets]
        if len(targets) > 1:
            entry["balance"] = balance
        for key in ("price", "context_window"):
            if key in catalog:
                entry[key] = catalog[key]
        models[name] = entry
    return models


# -- settings ----------------------------------------------------------------------------------


def _fallbacks(
    work: _Conversion, config: dict[str, Any], router: dict[str, Any], settings: dict[str, Any]
) -> None:
    models = config["models"]
    for rule in router.get("fallbacks") or settings.get("fallbacks") or []:
        for model, fallbacks in _mapping(rule).items():
            known = [f for f in fallbacks or [] if f in models]
            dropped = [f for f in fallbacks or [] if f not in models]
            if dropped:
                work.notes.append(f"fallbacks of {model}: unknown models {dropped} dropped")
            if model in models and known:
                models[model]["fallbacks"] = known
            elif model not in models:
                work.notes.append(f"fallbacks: model '{model}' is not in model_list; dropped")
    for key in ("context_window_fallbacks", "content_policy_fallbacks"):
        if router.get(key) or settings.get(key):
            work.notes.append(
                f"{key}: not translated (context overflow follows defaults.context_overflow)"
            )
    default = router.get("default_fallbacks") or settings.get("default_fallbacks")
    if default:
        known = [f for f in default if f in models]
        if known:
            config["routes"] = [{"name": "default", "use": "$requested", "fallbacks": known}]


def _defaults(
    work: _Conversion, router: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    timeout = router.get("timeout", settings.get("request_timeout"))
    if isinstance(timeout, int | float) and timeout > 0:
        defaults["timeout"] = f"{timeout:g}s"
    retries = router.get("num_retries", settings.get("num_retries"))
    if isinstance(retries, int) and retries >= 0:
        defaults["retry"] = {"attempts": min(retries + 1, 20)}
    breaker = {}
    if isinstance(router.get("allowed_fails"), int) and router["allowed_fails"] >= 1:
        breaker["failures"] = router["allowed_fails"]
    if isinstance(router.get("cooldown_time"), int | float):
        breaker["cooldown"] = f"{router['cooldown_time']:g}s"
    if breaker:
        defaults["circuit_breaker"] = breaker
    if settings.get("cache"):
        ttl = _mapping(settings.get("cache_params")).get("ttl")
        # LiteLLM caches every identical request, not only those at temperature 0 (Concord's
        # default): `when: {}` keeps that
        cache: dict[str, Any] = {"enabled": True, "when": {}}
        if isinstance(ttl, int | float) and ttl > 0:
            cache["ttl"] = f"{ttl:g}s"
        defaults["cache"] = cache
    else:
        defaults["cache"] = {"enabled": False}  # LiteLLM caches nothing unless told to
    return defaults


def _auth(work: _Conversion, general: dict[str, Any]) -> dict[str, Any]:
    master = general.get("master_key")
    if not master:
        work.notes.append("general_settings.master_key absent: auth.mode open (no client keys)")
        return {"mode": "open"}
    if isinstance(master, str) and master.startswith(ENV_PREFIX):
        admin = _value(master)
    else:
        admin = "${CONCORD_ADMIN_KEY}"
        work.notes.append(
            "general_settings.master_key was written inline; it is not copied: "
            "set $CONCORD_ADMIN_KEY instead"
        )
    work.notes.append(
        "virtual keys from LiteLLM's database are not migrated: "
        "create client keys with `concord keys create`"
    )
    return {"mode": "keys", "admin_key": admin}


def _storage(
    work: _Conversion, general: dict[str, Any], settings: dict[str, Any], router: dict[str, Any]
) -> dict[str, Any]:
    storage: dict[str, Any] = {}
    database = _inline_secret(work, general.get("database_url"), "database_url", "DATABASE_URL")
    if database:
        storage["database"] = database
    params = _mapping(settings.get("cache_params"))
    redis_cache = settings.get("cache") and params.get("type") == "redis"
    if not redis_cache:
        params = {}
    if redis_cache or router.get("redis_host") or router.get("redis_url"):
        # the Redis LiteLLM shares between instances (its cache's, else its router's) holds
        # Concord's shared state: limits, budgets, cache
        def given(key: str) -> Any:
            return params.get(key) or router.get(f"redis_{key}")

        url = _value(params.get("redis_url") or given("url"))
        if not url:
            host = _value(given("host")) or "localhost"
            port = _value(given("port")) or "6379"
            password = _inline_secret(work, given("password"), "password", "REDIS_PASSWORD")
            auth = f":{password}@" if password else ""
            url = f"redis://{auth}{host}:{port}/0"
        storage["state"] = url
    return storage


_TRANSLATED = {
    "router_settings": {
        "routing_strategy",
        "num_retries",
        "timeout",
        "fallbacks",
        "default_fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "allowed_fails",
        "cooldown_time",
        "redis_host",
        "redis_port",
        "redis_password",
        "redis_url",
    },
    "litellm_settings": {
        "cache",
        "cache_params",
        "num_retries",
        "request_timeout",
        "fallbacks",
        "default_fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "api_version",
    },
    "general_settings": {"master_key", "database_url"},
}


def _leftovers(
    work: _Conversion, router: dict[str, Any], settings: dict[str, Any], general: dict[str, Any]
) -> None:
    sections = {"router_settings": router, "litellm_settings": settings}
    sections["general_settings"] = general
    for section, values in sections.items():
        for key in sorted(set(values) - _TRANSLATED[section]):
            work.notes.append(f"{section}.{key}: not translated")
    params = _mapping(settings.get("cache_params"))
    if settings.get("cache") and params.get("type") not in (None, "redis", "local"):
        work.notes.append(f"cache_params.type '{params.get('type')}': in-process cache used")


# -- values and output -------------------------------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _value(raw: Any) -> str | None:
    """A LiteLLM value as a Concord string: `os.environ/VAR` becomes `${VAR}`."""
    if raw is None or raw == "":
        return None
    text = str(raw)
    if text.startswith(ENV_PREFIX):
        return "${" + text[len(ENV_PREFIX) :] + "}"
    return text


def _placeholder(variable: str) -> str:
    return "${" + variable + "}"


def _referenced_variables(value: Any) -> set[str]:
    """Every VAR the LiteLLM file reads as `os.environ/VAR`, so no new variable reuses one."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        return {value[len(ENV_PREFIX) :]}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*(_referenced_variables(item) for item in value))
    return set()


def _inline_secret(work: _Conversion, raw: Any, label: str, variable: str) -> str | None:
    """`raw` as a Concord value, or `${variable}` when it holds a credential written inline."""
    value = _value(raw)
    if value is None or value.startswith("${"):
        return value
    if label == "password" or re.match(r"^[a-z+]+://[^/@]*:[^/@]*@", value):
        work.notes.append(f"{label} held a password inline; it is not copied: set ${variable}")
        return "${" + variable + "}"
    return value


def _env_name(prefix: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", prefix.upper()).strip("_")


def _render(config: dict[str, Any], notes: list[str]) -> str:
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 100
    out = io.StringIO()
    yaml.dump(config, out)
    header = ["# Converted from a LiteLLM proxy config by `concord import litellm`."]
    if notes:
        header.append("#")
        header.append("# Not translated or changed on the way (review before deploying):")
        header.extend(f"#   - {note}" for note in notes)
    return "\n".join(header) + "\n\n" + out.getvalue()

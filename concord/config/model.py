"""The stored config: pydantic models of what users write in concord.yaml (SPEC §2).

These models mirror the file; nothing on the request path reads them. `engine.compile` turns a
validated `Config` into the immutable graph that runs. The JSON Schema in
`schemas/concord.schema.json` is generated from these models (`concord schema`), so the two
cannot drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from concord.config.values import DURATION_PATTERN, SIZE_PATTERN, parse_duration, parse_size

# Rules a later stage enforces in its own words: pydantic, config/checks.py or the `when`
# compiler. The printed schema states them too, so editors and CI reject what `concord validate`
# rejects; the schema layer of `load()` drops them (config/schema.py), so validate keeps those
# stages' messages and still lists every problem in one run.
SEMANTIC = "concord:semantic"


def semantic(*rules: dict[str, Any]) -> dict[str, Any]:
    """Schema keywords that add `rules` as `allOf` entries marked SEMANTIC."""
    return {"allOf": [{"$comment": SEMANTIC, **rule} for rule in rules]}


def _written(types: dict[str, str]) -> dict[str, Any]:
    """Each key present and not null: `use: null` is the same as no `use` to the model."""
    return {"required": list(types), "properties": {k: {"type": t} for k, t in types.items()}}


# Characters re.IGNORECASE folds onto an ASCII letter besides its two cases.
_CASE_FOLDS = {"i": "\u0130\u0131", "k": "\u212a", "s": "\u017f"}


def _ignoring_case(pattern: str) -> str:
    """A pattern of plain letters and punctuation as re.IGNORECASE reads it: JSON Schema
    patterns take no flags."""
    return "".join(
        f"[{c.upper()}{c.lower()}{_CASE_FOLDS.get(c.lower(), '')}]"
        if c.isascii() and c.isalpha()
        else c
        for c in pattern
    )


REQUESTED = "$requested"  # SPEC §2.4.2: only a route's `use` may name it
ROUTING_OWNED_PARAMS = ("model", "stream")  # SPEC §2.4.2: `params.set` may not force these
# SPEC §2.3: `provider/upstream-model`; the model part may itself contain `/`.
TARGET_PATTERN = r"^[^/]+/[\s\S]"
# SPEC §1: the forms state/backend.py and records/db.py accept; the scheme of a state URL is
# matched ignoring case.
STATE_URL_PATTERN = r"^(redis|rediss|unix)://"
DATABASE_URL_PATTERN = r"^(sqlite(\+\w+)?://(/.*)?|postgres(ql)?(\+\w+)?://.+)$"
# `${VAR}` as an editor sees it, before expansion: the shipped configs template storage URLs.
ENV_REFERENCE = r"\$\{"
WHOLE_ENV_REFERENCE = r"^\$\{[^{}]+\}$"  # a value written as one reference, `${PORT:-8080}`
# A superset of the strings pydantic reads as a datetime: ISO 8601, or Unix time in digits.
DATETIME_PATTERN = r"^(\d{4}-\d{2}-\d{2}([Tt_ ].+)?|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$"

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: 250ms, 30s, 10m, 1h, 1d, or a number of seconds.",
        }
    ),
]
# A duration above zero: a number, or text with a non-zero digit.
_POSITIVE_DURATION = {
    "anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": "[1-9]"}]
}
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": SIZE_PATTERN},
                {"type": "integer", "minimum": 0},
            ],
            "description": "A size: 512KiB, 8MiB, or a number of bytes.",
        }
    ),
]
Money = Annotated[float, Field(ge=0, description="US dollars.")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Target = Annotated[str, WithJsonSchema({"type": "string", **semantic({"pattern": TARGET_PATTERN})})]
# A catalog model named where `$requested` means nothing (fallbacks, downgrades, expectations).
ModelRef = Annotated[
    str, WithJsonSchema({"type": "string", **semantic({"not": {"const": REQUESTED}})})
]

Endpoint = Literal["chat", "completions", "embeddings", "messages"]
Period = Literal["day", "week", "month"]
OnExceed = Literal["block", "downgrade"]
Scope = Literal["key", "workspace", "user", "global"]
ENDPOINTS = get_args(Endpoint)

_SCALAR = {"type": ["string", "number", "boolean", "null"]}
_NOT_TEXT = {"type": ["number", "boolean", "null"]}
# config/checks.py: a glob is not empty and its brackets pair up, never nested.
_GLOB = {"type": "string", "minLength": 1, "pattern": r"^[^\[\]]*(\[[^\[\]]*\][^\[\]]*)*$"}


def _globs_of(word: str) -> str:
    """A regex of the globs that may match `word`: a prefix of it, `*`, its letters and stars, a
    suffix of it. Looser than matching (letter order is not checked), never stricter."""
    prefix = "".join(f"({c}" for c in word) + ")?" * len(word)
    suffix = "(" * len(word) + "".join(f"{c})?" for c in word)
    return f"{prefix}\\*[{''.join(sorted(set(word)))}*]*{suffix}"


# An endpoint name, or a glob that may match one (config/checks.py reports the rest).
_ENDPOINT_TEXT = {
    "anyOf": [
        {"enum": list(ENDPOINTS)},
        {"type": "string", "pattern": "^(" + "|".join(map(_globs_of, ENDPOINTS)) + ")$"},
    ]
}
COMPARISONS = ("gt", "gte", "lt", "lte")


def _match_value(scalar: dict[str, Any], comparisons: bool = True) -> dict[str, Any]:
    """SPEC §2.4.1 value forms over `scalar`: one, a list (any of), or a map of operators."""
    listed = {"type": "array", "items": scalar}
    operators: dict[str, Any] = {"eq": scalar, "ne": scalar, "in": listed, "not_in": listed}
    if comparisons:
        operators.update({op: {"type": "number"} for op in COMPARISONS})
    operators.update({"regex": {"type": "string"}, "exists": {"type": "boolean"}})
    operator_map = {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": operators,
    }
    return {"anyOf": [scalar, listed, operator_map]}


_MATCH_VALUE = {
    "description": "A scalar (equality; strings may use * globs), a list (any of), "
    "or a map of operators.",
    **_match_value(_SCALAR),
}
# What config/checks.py accepts per kind of field (SPEC §2.4.1): numbers compare only with
# numbers, flags with true/false, and text is a glob; null stands for an absent parameter.
STRING_FIELDS = ("endpoint", "model", "workspace", "key", "user", "tags")
NUMERIC_FIELDS = ("input_tokens", "max_tokens", "temperature", "budget_used")
BOOLEAN_FIELDS = ("stream", "tools", "images")
_KIND_DEFS: dict[str, Any] = {
    "EndpointMatch": _match_value({"anyOf": [_ENDPOINT_TEXT, _NOT_TEXT]}, comparisons=False),
    "StringMatch": _match_value({"anyOf": [_GLOB, _NOT_TEXT]}, comparisons=False),
    "NumericMatch": _match_value({"type": ["number", "null"]}),
    "BooleanMatch": _match_value({"type": ["boolean", "null"]}, comparisons=False),
    "AnyMatch": _match_value({"anyOf": [_GLOB, _NOT_TEXT]}),
}
_FIELD_KINDS = {
    **{name: "StringMatch" for name in STRING_FIELDS},
    "endpoint": "EndpointMatch",
    **{name: "NumericMatch" for name in NUMERIC_FIELDS},
    **{name: "BooleanMatch" for name in BOOLEAN_FIELDS},
}
WHEN_FIELDS = tuple(_FIELD_KINDS)


def _match_field(kind: str) -> dict[str, Any]:
    return {"$ref": "#/$defs/MatchValue", **semantic({"$ref": f"#/$defs/{kind}"})}


WHEN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Match conditions (SPEC §2.4.1). Keys are ANDed.",
    "additionalProperties": False,
    "properties": {
        **{name: _match_field(kind) for name, kind in _FIELD_KINDS.items()},
        "all": {"type": "array", "items": {"$ref": "#/$defs/When"}},
        "any": {"type": "array", "items": {"$ref": "#/$defs/When"}},
        "not": {"$ref": "#/$defs/When"},
    },
    "patternProperties": {
        r"^header\.[A-Za-z0-9_-]+$": _match_field("AnyMatch"),
        r"^metadata\.[A-Za-z0-9_.-]+$": _match_field("AnyMatch"),
    },
}
# The `when` compiler: `all`/`any` list at least one condition, and a nested condition is never
# `{}`. Only where a `when` is always compiled: a disabled cache's `when` never is.
_NESTED = {"minProperties": 1, "$ref": "#/$defs/WhenGroups"}
_WHEN_GROUPS = {
    "properties": {
        "all": {"minItems": 1, "items": _NESTED},
        "any": {"minItems": 1, "items": _NESTED},
        "not": _NESTED,
    }
}
_WHEN_PLACEHOLDER = "concord:when"
_LATE_REF = "concord:ref"  # a `$ref` to a definition added after pydantic's generation
COMPILED_WHEN = semantic({_LATE_REF: "#/$defs/WhenGroups"})
When = Annotated[dict[str, Any], WithJsonSchema({"$comment": _WHEN_PLACEHOLDER})]
SCHEMA_EXTRA_DEFS: dict[str, Any] = {
    "When": WHEN_SCHEMA,
    "MatchValue": _MATCH_VALUE,
    "WhenGroups": _WHEN_GROUPS,
    **_KIND_DEFS,
}
# SPEC §2.6: `on_exceed: downgrade` continues on `downgrade_to`, so it needs one.
_DOWNGRADE_NEEDS_MODEL = semantic(
    {
        "if": {"required": ["on_exceed"], "properties": {"on_exceed": {"const": "downgrade"}}},
        "then": _written({"downgrade_to": "string"}),
    }
)


class Stored(BaseModel):
    """Base of every config model: unknown keys are errors (SPEC §2), values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ServerConfig(Stored):
    host: str = Field(
        default="127.0.0.1", description="Listen address; `concord serve --host` overrides it."
    )
    port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="Listen port; `concord serve --port` overrides it.",
    )
    max_body: Size = Field(default=8 * 1024 * 1024, description="Larger request bodies get 413.")
    max_concurrency: int = Field(default=0, ge=0, description="0 means unlimited.")
    queue_timeout: Duration = Field(
        default=30.0, description="How long a request waits for a concurrency slot before 503."
    )
    request_timeout: Duration = Field(
        default=600.0, description="Deadline of a whole request, retries and fallbacks included."
    )
    cors_origins: list[str] = Field(
        default=[], description="Origins allowed by CORS; empty disables CORS."
    )
    log_bodies: bool = Field(
        default=False,
        description=(
            "Add the request body and the answer to each access-log line (`request`, "
            "`response`): prompts and completions reach the logs. Headers, and so keys, never do."
        ),
    )


class StorageConfig(Stored):
    state: str = Field(
        default="memory",
        description="`memory` or a redis:// URL.",
        json_schema_extra=semantic(
            {
                "anyOf": [
                    {"const": "memory"},
                    {"pattern": _ignoring_case(STATE_URL_PATTERN)},
                    {"pattern": ENV_REFERENCE},
                ]
            }
        ),
    )
    database: str = Field(
        default="sqlite:///concord.db",
        description="sqlite:///path (relative to the config file) or a postgresql:// URL.",
        json_schema_extra=semantic(
            {"anyOf": [{"pattern": DATABASE_URL_PATTERN}, {"pattern": ENV_REFERENCE}]}
        ),
    )
    state_failure: Literal["open", "closed"] = Field(
        default="open",
        description="When Redis is unreachable: `open` falls back to per-process counters, "
        "`closed` refuses requests that need limits or budgets.",
    )


class DeclaredKey(Stored):
    """A client key declared in the config by its SHA-256 (SPEC §2.8)."""

    name: Name
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    workspace: str = "default"
    user: str | None = None
    tags: list[str] = []
    expires: datetime | None = Field(
        default=None,
        description="ISO 8601 date-time after which the key is refused.",
        json_schema_extra=semantic({"pattern": DATETIME_PATTERN}),
    )


class AuthConfig(Stored):
    admin_key: str = Field(
        default="", description="Bearer key of the admin API; empty disables the admin API (404)."
    )
    mode: Literal["keys", "open"] = Field(
        default="keys",
        description="`keys` needs a client key; `open` serves everyone as workspace `default`.",
    )
    keys: list[DeclaredKey] = Field(
        default=[], description="Client keys declared by SHA-256 (§2.8)."
    )


class BudgetSpec(Stored):
    model_config = ConfigDict(json_schema_extra=_DOWNGRADE_NEEDS_MODEL)

    limit_usd: Money
    period: Period = "month"
    on_exceed: OnExceed = "block"
    downgrade_to: ModelRef | None = None


class WorkspaceConfig(Stored):
    budget: BudgetSpec | None = None
    tags: list[str] = []
    models: list[str] | None = Field(
        default=None,
        description="Catalog models (globs allowed) this workspace may see and call; "
        "absent means all.",
    )


class ProbeSpec(Stored):
    """SPEC §5: an optional background health check of one provider."""

    interval: Duration = Field(
        default=30.0,
        gt=0,
        description="Time between two probes.",
        json_schema_extra=semantic(_POSITIVE_DURATION),
    )
    model: str = Field(description="The upstream model the probe asks (a one-token request).")
    timeout: Duration = Field(
        default=5.0,
        gt=0,
        description="How long one probe may take.",
        json_schema_extra=semantic(_POSITIVE_DURATION),
    )


class ProviderConfig(Stored):
    # config/checks.py: Azure needs its endpoint and API version.
    model_config = ConfigDict(
        json_schema_extra=semantic(
            {
                "if": {"required": ["type"], "properties": {"type": {"const": "azure"}}},
                "then": _written({"base_url": "string", "api_version": "string"}),
            }
        )
    )

    type: Literal["openai", "azure", "anthropic", "mock"] = Field(
        description="The adapter: any OpenAI-compatible API, Azure, Anthropic, or mock."
    )
    base_url: str | None = None
    api_keys: list[str] = Field(
        default=[],
        description=(
            "Tried in order; a key answered 401/403 cools down, and one answered 429 cools down "
            "for that model (deployment) only."
        ),
    )
    api_version: str | None = Field(
        default=None,
        description=(
            "Azure only, and required there: sent as `api-version` (e.g. `2024-10-21`). An "
            "Azure target names the deployment: `<provider>/<deployment>`."
        ),
    )
    timeout: Duration | None = Field(
        default=None, description="Per upstream call; defaults to `defaults.timeout`."
    )
    max_connections: int = Field(
        default=200, ge=1, description="Size of the provider's connection pool."
    )
    headers: dict[str, str] = Field(
        default={}, description="Extra headers sent upstream (never logged)."
    )
    key_cooldown: Duration | None = Field(
        default=None, description="Defaults to `defaults.key_cooldown`."
    )
    reply: str | None = Field(
        default=None, description="mock only: a fixed reply instead of echoing the prompt."
    )
    latency: Duration = Field(default=0.0, description="mock only: delay before answering.")
    probe: ProbeSpec | None = Field(
        default=None,
        description="Background health probe: a one-token request every `interval`.",
    )


class Price(Stored):
    input: Money = 0.0
    output: Money = 0.0
    cached_input: Money | None = None


class TargetSpec(Stored):
    target: Target = Field(description="provider/upstream-model")
    weight: float = Field(default=1.0, gt=0)


class ModelConfig(Stored):
    targets: list[Target | TargetSpec] = Field(
        min_length=1, description="`provider/upstream-model`, in priority order."
    )
    balance: Literal["priority", "weighted", "round_robin", "least_latency"] = "priority"
    fallbacks: list[ModelRef] = Field(
        default=[], description="Models tried in order once every target of this one failed."
    )
    price: Price | None = Field(
        default=None, description="USD per 1M tokens; needed for budgets and cost metrics."
    )
    context_window: int | None = Field(
        default=None, gt=0, description="Targets that cannot hold the request are skipped."
    )
    max_output_tokens: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Output tokens assumed when a request sets no max_tokens (budget reservations), and "
            "the `max_tokens` sent to an Anthropic upstream for such a request (else 4096)."
        ),
    )


class RejectSpec(Stored):
    status: int = Field(default=403, ge=400, le=599)
    message: str = "Request rejected by policy"


class Backoff(Stored):
    initial: Duration = 0.25
    max: Duration = 8.0
    jitter: bool = True


RetryOn = int | Literal["timeout", "connection"]


class RetrySpec(Stored):
    attempts: int = Field(
        default=2, ge=1, le=20, description="Tries of one target, the first included."
    )
    backoff: Backoff = Backoff()
    on: list[RetryOn] = Field(
        default=[429, 500, 502, 503, 504, "timeout", "connection"],
        description="Statuses and failure kinds that are retried.",
    )


class BreakerSpec(Stored):
    failures: int = Field(
        default=3, ge=1, description="Failures in a row that open a target's circuit."
    )
    cooldown: Duration = Field(
        default=600.0, description="How long an open circuit skips the target."
    )


class CacheSpec(Stored):
    enabled: bool = True
    ttl: Duration = 3600.0
    when: When | None = Field(
        default=None,
        description=(
            "Only requests matching these conditions are cached. Without one: requests at "
            "`temperature: 0`, and embeddings (deterministic answers). `{}` caches every "
            "request."
        ),
    )
    scope: Literal["workspace", "global"] = "workspace"
    max_entries: int = Field(default=10000, ge=1, description="Memory backend LRU bound.")


ContextOverflow = Literal["fallback", "truncate", "summarize"]


class Defaults(Stored):
    timeout: Duration = 60.0
    retry: RetrySpec = RetrySpec()
    circuit_breaker: BreakerSpec = BreakerSpec()
    key_cooldown: Duration = Field(default=300.0, description="How long a rejected API key rests.")
    context_overflow: ContextOverflow = Field(
        default="fallback",
        description=(
            "When an upstream says the request is too long: `fallback` moves to the next model "
            "with a larger `context_window`; `truncate` drops the oldest turns (keeping system "
            "prompts and the last question; of an agent loop's tool calls after it, the oldest "
            "go first, each with its results) and retries once; `summarize` "
            "has the same target condense the older turns, then retries, truncating if that "
            "fails. See docs/http.md."
        ),
    )
    cache: CacheSpec = CacheSpec()


class ParamsSpec(Stored):
    set: dict[str, Any] = Field(
        default={},
        json_schema_extra=semantic(
            {"propertyNames": {"not": {"enum": list(ROUTING_OWNED_PARAMS)}}}
        ),
    )
    max: dict[str, float] = {}


class Route(Stored):
    # SPEC §2.4.2: a route uses a model or rejects, never both, never neither.
    model_config = ConfigDict(
        json_schema_extra=semantic(
            {"oneOf": [_written({"use": "string"}), _written({"reject": "object"})]}
        )
    )

    name: Name
    when: When | None = Field(
        default=None,
        description="Conditions; absent matches everything.",
        json_schema_extra=COMPILED_WHEN,
    )
    use: str | None = Field(default=None, description="A catalog model or $requested.")
    fallbacks: list[ModelRef] = []
    reject: RejectSpec | None = Field(
        default=None, description="Answer with this status instead of calling a model."
    )
    retry: RetrySpec | None = None
    timeout: Duration | None = None
    cache: Literal[False] | CacheSpec | None = Field(
        default=None,
        description="`false` disables the cache on this route; a map overrides defaults.",
    )
    limits: list[str] = Field(
        default=[], description="Names of `rate_limits` that apply only on this route."
    )
    params: ParamsSpec | None = Field(
        default=None, description="`set` forces body values; `max` caps them."
    )
    context_overflow: ContextOverflow | None = Field(
        default=None, description="`defaults.context_overflow` for this route's requests."
    )


class BudgetRule(Stored):
    model_config = ConfigDict(json_schema_extra=_DOWNGRADE_NEEDS_MODEL)

    name: Name
    scope: Scope = Field(
        default="workspace",
        description=(
            "Who it counts against, each apart: a key (one issued through the admin API by its "
            "id, so keys sharing a name count apart), a workspace, an end user, or everyone "
            "together."
        ),
    )
    limit_usd: Money
    period: Period = "month"
    on_exceed: OnExceed = "block"
    downgrade_to: ModelRef | None = None
    when: When | None = Field(default=None, json_schema_extra=COMPILED_WHEN)


class RateLimit(Stored):
    # SPEC §2.7: a rate limit limits requests, tokens or both.
    model_config = ConfigDict(
        json_schema_extra=semantic(
            {"anyOf": [_written({"rpm": "integer"}), _written({"tpm": "integer"})]}
        )
    )

    name: Name
    per: Scope = Field(
        default="key",
        description=(
            "Who it counts against, each apart: a key (one issued through the admin API by its "
            "id, so keys sharing a name count apart), a workspace, an end user, or everyone "
            "together."
        ),
    )
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    when: When | None = Field(default=None, json_schema_extra=COMPILED_WHEN)


class TestRequest(Stored):
    model: str
    endpoint: Endpoint = "chat"
    workspace: str = "default"
    key: str | None = None
    user: str | None = None
    tags: list[str] = []
    headers: dict[str, str] = {}
    metadata: dict[str, Any] = {}
    input_tokens: int = Field(default=100, ge=0)
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    tools: bool = False
    images: bool = False
    budget_used: float = 0.0


class TestExpect(Stored):
    route: str | None = None
    model: ModelRef | None = None
    attempts: list[Target] | None = None
    reject: int | bool | None = Field(
        default=None, description="true, or the expected rejection status."
    )
    cache: bool | None = None
    limits: list[str] | None = None


class TestCase(Stored):
    __test__ = False  # not a pytest class

    name: Name
    request: TestRequest
    expect: TestExpect


class Config(Stored):
    """A whole concord.yaml after includes are merged (SPEC §2)."""

    version: Literal[1] = Field(description="The config format version; always 1.")
    include: list[str] = Field(
        default=[],
        description=(
            "Globs of files merged into this one, relative to it, in sorted order (§2.9); "
            "`${VAR}` expands in them as in any string. A glob skips the file it is written in "
            "and the files including that one."
        ),
        json_schema_extra=semantic({"items": {"minLength": 1}}),
    )
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    auth: AuthConfig = AuthConfig()
    workspaces: dict[str, WorkspaceConfig] = Field(
        default={}, description="Workspaces synced into the database at load (§2.6)."
    )
    providers: dict[str, ProviderConfig] = Field(description="Upstream APIs by name (§2.2).")
    models: dict[str, ModelConfig] = Field(
        description="The catalog clients see in `/v1/models` (§2.3)."
    )
    routes: list[Route] = Field(
        default=[], description="Evaluated in order; the first match wins (§2.4)."
    )
    defaults: Defaults = Field(
        default=Defaults(), description="Resilience and cache settings every route inherits (§2.5)."
    )
    budgets: list[BudgetRule] = Field(default=[], description="Extra budgets by scope (§2.6).")
    rate_limits: list[RateLimit] = Field(
        default=[], description="Requests and tokens per minute (§2.7)."
    )
    tests: list[TestCase] = Field(
        default=[], description="Routing tests run by `concord test` (§6)."
    )


# Marks a number or flag that may also be written as a `${VAR}` reference: an editor checks the
# file before variables are filled in (`port: ${PORT:-8080}`); `load()` checks it after, so the
# schema layer there drops the allowance (config/schema.py).
TEMPLATABLE = "concord:templatable"
_TEMPLATED_TYPES = frozenset({"integer", "number", "boolean"})


def _templatable(node: Any) -> Any:
    """Every number or flag of the schema also accepts a whole `${VAR}` reference (the string
    branch `pattern` alone constrains: JSON Schema applies it to strings only)."""
    if isinstance(node, list):
        return [_templatable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _templatable(value) for key, value in node.items()}
    kind = node.get("type")
    kinds = [kind] if isinstance(kind, str) else kind
    if isinstance(kinds, list) and "string" not in kinds and _TEMPLATED_TYPES.intersection(kinds):
        out.update({"type": [*kinds, "string"], "pattern": WHOLE_ENV_REFERENCE, TEMPLATABLE: True})
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of concord.yaml, generated from the models above."""
    schema = _templatable(_link_when(Config.model_json_schema(mode="validation")))
    schema.setdefault("$defs", {}).update(SCHEMA_EXTRA_DEFS)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://concord.dev/schemas/concord.schema.json",
        **schema,
        "title": "Concord configuration",
    }


def _link_when(node: Any) -> Any:
    """Point every `when` placeholder and late reference at its definition (pydantic cannot:
    it resolves `$ref` only to its own models)."""
    if isinstance(node, dict):
        if node.get("$comment") == _WHEN_PLACEHOLDER:
            return {"$ref": "#/$defs/When"}
        return {"$ref" if k == _LATE_REF else k: _link_when(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_link_when(item) for item in node]
    return node

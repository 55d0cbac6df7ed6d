"""Packaging for GitOps, checked structurally (Docker cannot run here): Dockerfile, compose, CI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from concord.config.load import load

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "examples" / "compose"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    pairs = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def final_stage(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(pairs) if word == "FROM"]
    return pairs[starts[-1] :]


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def test_dockerfile_runs_concord_as_a_non_root_user() -> None:
    stage = final_stage(instructions(ROOT / "Dockerfile"))
    base = stage[0][1]
    assert base.startswith("python:3.11-slim")
    users = [args for word, args in stage if word == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert ("EXPOSE", "8080") in stage
    healthcheck = next(args for word, args in stage if word == "HEALTHCHECK")
    assert "/healthz" in healthcheck
    entry = next(args for word, args in stage if word == "ENTRYPOINT")
    command = next(args for word, args in stage if word == "CMD")
    argv = [*json.loads(entry), *json.loads(command)]
    assert argv[:2] == ["concord", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # everything out, then only what the build needs back in
    assert {"!pyproject.toml", "!concord/"} <= set(lines)
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = [args for word, args in instructions(ROOT / "Dockerfile") if word == "COPY"]
    for args in copied:
        if "--from=" in args:
            continue  # from the build stage, not the context
        for source in [a for a in args.split()[:-1] if not a.startswith("--")]:
            assert source.rstrip("/") in kept, f"COPY {source} is excluded by .dockerignore"


def test_compose_runs_concord_with_redis_and_postgres() -> None:
    compose = load_yaml(COMPOSE_DIR / "docker-compose.yml")
    services = compose["services"]
    assert {"concord", "redis", "postgres"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
    concord = services["concord"]
    assert concord["command"][:1] == ["serve"] and "0.0.0.0" in concord["command"]
    assert concord["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    env = concord["environment"]
    assert env["CONCORD_CONFIG"] == "/etc/concord/concord.yaml"
    assert env["CONCORD_REDIS_URL"].startswith("redis://redis:")
    assert env["CONCORD_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["CONCORD_DATABASE_URL"]
    assert "/readyz" in " ".join(concord["healthcheck"]["test"])
    assert (ROOT / concord["build"]["context"].replace("../..", ".")).resolve() == ROOT
    mounted = [v for v in concord["volumes"] if v.split(":")[1] == "/etc/concord"]
    assert mounted, "the config directory is not mounted"
    pg_env = services["postgres"]["environment"]
    assert pg_env["POSTGRES_DB"] == "concord" and pg_env["POSTGRES_USER"] == "concord"


def test_compose_config_uses_shared_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONCORD_REDIS_URL", "CONCORD_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    loaded = load(COMPOSE_DIR / "concord.yaml", env={})
    assert loaded.ok, [d.render() for d in loaded.errors]
    assert loaded.graph is not None
    assert loaded.graph.storage.state.startswith("redis://redis:6379")
    assert loaded.graph.storage.database.startswith("postgresql://")
    assert loaded.graph.server.host == "0.0.0.0"


def test_ci_workflow_validates_strictly_and_runs_routing_tests() -> None:
    workflow = load_yaml(ROOT / "examples" / "ci" / "concord.yml")
    triggers = workflow.get("on") or workflow.get(True)  # YAML 1.1 reads `on` as a boolean
    assert "pull_request" in triggers
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "concord validate --strict" in commands
    assert "concord test" in commands
    assert any(str(step.get("uses", "")).startswith("actions/checkout") for step in steps)

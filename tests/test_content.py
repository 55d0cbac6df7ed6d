"""The configuration users start from (SPEC §2, §6): the quickstart, examples/ and policies/.

Every shipped config must pass `concord validate` and its own routing tests with no provider key
in the environment, as in a CI job without secrets; the Kubernetes manifests must wire probes,
config and secrets the way the gateway expects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from concord.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
POLICIES = ROOT / "policies"
K8S = EXAMPLES / "kubernetes"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_KEY_VAR = re.compile(r"_KEY(_\d+)?$")


def _yaml_documents(path: Path) -> list[Any]:
    return [
        doc for doc in YAML(typ="safe", pure=True).load_all(path.read_text()) if doc is not None
    ]


def _is_concord_config(path: Path) -> bool:
    """A concord config is one mapping with `version: 1`; Kubernetes manifests are not."""
    docs = _yaml_documents(path)
    return len(docs) == 1 and isinstance(docs[0], dict) and docs[0].get("version") == 1


def _shipped_configs() -> list[Path]:
    candidates = [ROOT / "concord.yaml", *sorted(EXAMPLES.rglob("*.yaml"))]
    return [path for path in candidates if _is_concord_config(path)]


CONFIGS = _shipped_configs()
POLICY_FILES = sorted(POLICIES.glob("*.yaml"))


def _config_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _env_names(paths: list[Path]) -> set[str]:
    return {name for path in paths for name in _ENV_REF.findall(path.read_text())}


@pytest.fixture(autouse=True)
def no_env_from_the_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every ${VAR} the shipped files read, so results never depend on the shell."""
    files = [*CONFIGS, *POLICY_FILES]
    for name in _env_names(files):
        monkeypatch.delenv(name, raising=False)


def test_every_documented_example_is_checked() -> None:
    checked = {_config_id(path) for path in CONFIGS}
    assert checked >= {
        "concord.yaml",
        "examples/failover.yaml",
        "examples/cost-control.yaml",
        "examples/multi-key.yaml",
        "examples/tiers.yaml",
        "examples/with-policies.yaml",
        "examples/kubernetes/concord.yaml",
    }
    readme = (EXAMPLES / "README.md").read_text()
    for path in CONFIGS:
        assert path.name in readme or path.parent.name in readme, f"{path} not in README"


@pytest.mark.parametrize("path", CONFIGS, ids=_config_id)
def test_config_validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err


def test_quickstart_validates_without_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    """The first file a user runs must be clean, even under --strict."""
    code = main(["validate", "--strict", str(ROOT / "concord.yaml")])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err


@pytest.mark.parametrize("path", CONFIGS, ids=_config_id)
def test_missing_keys_are_the_only_warnings(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a placeholder in every *_KEY variable, each file is clean even under --strict."""
    for name in _env_names([path, *POLICY_FILES]):
        if _KEY_VAR.search(name):
            monkeypatch.setenv(name, "placeholder-not-a-real-key")
    code = main(["validate", "--strict", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err


@pytest.mark.parametrize("path", CONFIGS, ids=_config_id)
def test_routing_tests_pass(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", "-c", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    ran = [line for line in out.out.splitlines() if line.startswith(("PASS ", "FAIL "))]
    assert ran, f"{path} declares no routing tests"


def test_quickstart_needs_no_network() -> None:
    """Every target of the quickstart is served by the built-in mock provider (SPEC §2.2.1)."""
    (config,) = _yaml_documents(ROOT / "concord.yaml")
    assert config["auth"]["mode"] == "open"
    mocks = {name for name, p in config["providers"].items() if p["type"] == "mock"}
    assert mocks == set(config["providers"])
    for name, model in config["models"].items():
        for target in model["targets"]:
            assert target.split("/", 1)[0] in mocks, f"{name}: {target}"
    first_line = (ROOT / "concord.yaml").read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=./schemas/concord.schema.json"


def test_quickstart_serves_offline(tmp_path: Path) -> None:
    """SPEC §2.2.1: the quickstart answers every endpoint with no key and no network."""
    from starlette.testclient import TestClient

    from concord.gateway.app import create_app

    config = tmp_path / "concord.yaml"  # keeps any database file out of the repository
    config.write_text((ROOT / "concord.yaml").read_text())
    with TestClient(create_app(str(config), env={})) as client:
        assert client.get("/readyz").status_code == 200
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello there"}]},
        )
        assert chat.status_code == 200, chat.text
        assert "Hello there" in chat.json()["choices"][0]["message"]["content"]
        assert chat.headers["x-concord-provider"] == "demo"
        assert chat.headers["x-concord-route"] == "default"
        messages = client.post(
            "/v1/messages",
            json={
                "model": "claude-sonnet",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        )
        assert messages.status_code == 200, messages.text
        assert messages.json()["type"] == "message"
        embeddings = client.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"}
        )
        assert embeddings.status_code == 200, embeddings.text
        assert embeddings.headers["x-concord-route"] == "embeddings"
        listed = {model["id"] for model in client.get("/v1/models").json()["data"]}
    (declared,) = _yaml_documents(ROOT / "concord.yaml")
    assert listed == set(declared["models"])


# --- policies -------------------------------------------------------------------------------


def test_policies_exist() -> None:
    names = {path.name for path in POLICY_FILES}
    assert names >= {"cost-guard.yaml", "free-tier.yaml", "failover.yaml"}


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_is_an_includable_file_with_tests(path: Path) -> None:
    """SPEC §2.9: an included file holds any top-level key but `version`."""
    (policy,) = _yaml_documents(path)
    assert "version" not in policy
    assert not {"providers", "models"} & set(policy), "the catalog belongs to the including file"
    assert policy.get("tests"), "a policy proves itself with routing tests"
    assert "Expects" in path.read_text().split("\n\n", 1)[0], "header names the models it needs"


def test_with_policies_includes_every_policy() -> None:
    """So each policy's own tests run through examples/with-policies.yaml."""
    (config,) = _yaml_documents(EXAMPLES / "with-policies.yaml")
    included: set[Path] = set()
    for pattern in config["include"]:
        included.update(path.resolve() for path in EXAMPLES.glob(pattern))
    assert included == {path.resolve() for path in POLICY_FILES}


def test_policy_tests_run_through_with_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "-c", str(EXAMPLES / "with-policies.yaml")]) == 0
    passed = {line.removeprefix("PASS ") for line in capsys.readouterr().out.splitlines()}
    for path in POLICY_FILES:
        (policy,) = _yaml_documents(path)
        for case in policy["tests"]:
            assert case["name"] in passed, f"{path.name}: {case['name']!r} did not run"


# --- Kubernetes -----------------------------------------------------------------------------


def _manifest(name: str) -> dict[str, Any]:
    (doc,) = _yaml_documents(K8S / name)
    return doc


def _container() -> dict[str, Any]:
    deployment = _manifest("deployment.yml")
    assert deployment["kind"] == "Deployment"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_probes_readyz_and_healthz() -> None:
    container = _container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path
        assert http_get["port"] in ports or http_get["port"] in ports.values()
    (config,) = _yaml_documents(K8S / "concord.yaml")
    assert config["server"]["host"] == "0.0.0.0"
    assert config["server"]["port"] in ports.values()


def test_deployment_runs_as_non_root() -> None:
    pod = _manifest("deployment.yml")["spec"]["template"]["spec"]
    container = _container()
    non_root = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert non_root.get("runAsNonRoot") is True
    assert non_root.get("runAsUser", 1) != 0
    assert container["securityContext"].get("allowPrivilegeEscalation") is False


def test_deployment_mounts_the_configmap_for_hot_reload() -> None:
    """SPEC §4: a ConfigMap update swaps the `..data` symlink, which a subPath mount never sees."""
    pod = _manifest("deployment.yml")["spec"]["template"]["spec"]
    configmap = _manifest("configmap.yml")
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [
        m
        for m in _container()["volumeMounts"]
        if volumes[m["name"]].get("configMap", {}).get("name") == configmap["metadata"]["name"]
    ]
    assert mount["mountPath"] == "/etc/concord"
    assert "subPath" not in mount
    env = {e["name"]: e.get("value") for e in _container().get("env", [])}
    assert env.get("CONCORD_CONFIG") == "/etc/concord/concord.yaml"
    assert "concord.yaml" in configmap["data"]


def test_deployment_reads_keys_from_the_secret() -> None:
    secret = _manifest("secret.example.yml")
    assert secret["kind"] == "Secret"
    refs = [src["secretRef"]["name"] for src in _container()["envFrom"] if "secretRef" in src]
    assert refs == [secret["metadata"]["name"]]
    referenced = _env_names([K8S / "concord.yaml"])
    assert set(secret["stringData"]) <= referenced, "the Secret sets variables the config reads"
    assert all(value == "" for value in secret["stringData"].values()), "no real secret committed"


def test_service_selects_the_deployment_pods() -> None:
    service = _manifest("service.yml")
    labels = _manifest("deployment.yml")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {port["name"] for port in _container()["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names


def test_kustomization_lists_existing_manifests_but_not_the_secret_template() -> None:
    resources = _manifest("kustomization.yml")["resources"]
    assert all((K8S / name).is_file() for name in resources)
    assert {"deployment.yml", "service.yml", "configmap.yml"} <= set(resources)
    assert "secret.example.yml" not in resources


def test_configmap_embeds_the_kubernetes_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    embedded = _manifest("configmap.yml")["data"]["concord.yaml"]
    assert embedded == (K8S / "concord.yaml").read_text(), "configmap.yml is out of date"
    path = tmp_path / "concord.yaml"
    path.write_text(embedded)
    code = main(["validate", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err

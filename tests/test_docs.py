"""The docs a newcomer reads stay true: the configuration reference is the schema's."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_reference", DOCS / "generate_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_matches_the_schema() -> None:
    checked_in = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert checked_in == generator().render(), (
        "docs/configuration.md is stale: run python docs/generate_reference.py"
    )


def test_reference_lists_every_top_level_key_and_setting() -> None:
    from concord.config.model import Config

    text = generator().render()
    for key in Config.model_fields:
        assert f"## `{key}`" in text
    for path in ("server.max_body", "providers.<name>.api_keys", "routes[].fallbacks"):
        assert f"| `{path}` |" in text


def test_check_mode_flags_a_stale_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    module = generator()
    monkeypatch.setattr(module, "OUTPUT", tmp_path / "configuration.md")
    (tmp_path / "configuration.md").write_text("old\n")
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0


def test_relative_links_in_docs_resolve() -> None:
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"

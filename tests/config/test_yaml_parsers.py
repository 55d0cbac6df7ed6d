"""libyaml and the pure-Python parser read a config alike: the same tree, the same positions,
the same diagnostics (config/source.py parses with libyaml when ruamel.yaml.clib is installed,
several times faster on a large config, and falls back to the pure parser for its errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concord.config import source
from concord.config.errors import ConfigUnreadable
from concord.config.source import read_source

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(
    [
        ROOT / "concord.yaml",
        *ROOT.glob("examples/**/*.yaml"),
        *ROOT.glob("policies/*.yaml"),
        *(ROOT / "tests" / "config" / "fixtures").glob("*.yaml"),
    ]
)
SNIPPETS = {
    "anchors-and-merges": (
        "base: &base {type: openai, timeout: 30s}\n"
        "providers:\n  a: {<<: *base, base_url: 'http://a'}\n  b:\n    <<: [*base]\n"
    ),
    "block-scalars": "text: |\n  line one\n   indented\n\nfolded: >-\n  one\n  two\n",
    "plain-and-quoted": (
        "port: ${PORT}\nhost: \"${PORT}\"\nname: 'it''s'\nn: 0o17\nf: 1e3\nb: true\n"
    ),
    "unicode": 'name: "caf\\u00e9"\nlabel: naïve — ok\nemoji: "\\U0001F600"\n',
    "crlf": "version: 1\r\nserver:\r\n  port: 8080\r\n",
    "bom": "\ufeffversion: 1\n",
    "comments": "# top\nversion: 1 # trailing\nlist: [a, b, # c\n  d]\n",
    "explicit-tags": "a: !!str 5\nb: !!int '7'\nc: !custom x\n",
    "timestamps-and-nulls": "t: 2026-11-26\nn: ~\nm: null\n",
    "duplicate-keys": "a: 1\nb: 2\na: 3\n",
    "empty": "",
    "only-comment": "# nothing\n",
    "top-level-list": "- a\n- b\n",
    "long-keys": "? complex key\n: value\n",
    "syntax-unclosed-flow": "providers: {a: 1\n",
    "syntax-bad-indent": "a:\n  b: 1\n c: 2\n",
    "syntax-tab": "a:\n\tb: 1\n",
    "syntax-unclosed-quote": 'a: "open\n',
    "syntax-undefined-alias": "a: *nowhere\n",
    "syntax-two-documents": "a: 1\n---\nb: 2\n",
    "control-character": 'a: "x\x07y"\n',
}


def read_with(parser: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(source, "USE_LIBYAML", parser == "libyaml")
    try:
        result = read_source(path, env={"PORT": "9000"})
    except ConfigUnreadable as error:
        return ("unreadable", [d.render() for d in error.diagnostics])
    return (
        result.tree,
        {path: (str(a), str(b)) for path, (a, b) in result.spans.items()},
        [d.render() for d in result.diagnostics],
        result.files,
    )


def test_libyaml_is_in_use_here() -> None:
    """Otherwise the comparisons below compare the pure parser with itself."""
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__module__.startswith("ruamel.yaml.clib")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_repository_configs_read_alike(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_with("libyaml", path, monkeypatch) == read_with("pure", path, monkeypatch)


@pytest.mark.parametrize("name", SNIPPETS)
def test_tricky_yaml_reads_alike(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "concord.yaml"
    path.write_bytes(SNIPPETS[name].encode("utf-8"))
    monkeypatch.chdir(tmp_path)
    relative = Path("concord.yaml")
    assert read_with("libyaml", relative, monkeypatch) == read_with("pure", relative, monkeypatch)


def test_nesting_deeper_than_any_config_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libyaml composes in C recursion: a hostile depth must be refused before, not crash."""
    path = tmp_path / "concord.yaml"
    path.write_text("version: 1\nx: " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    for parser in ("libyaml", "pure"):
        kind, diagnostics = read_with(parser, path, monkeypatch)  # type: ignore[misc]
        assert kind == "unreadable"
        assert "YAML nesting is too deep" in diagnostics[0]


def test_an_empty_value_is_placed_on_its_own_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one place the parsers differ: libyaml puts a value left empty (`budget:`) right
    after its key, where the pure parser put it at the start of the next line."""
    path = tmp_path / "concord.yaml"
    path.write_text("a: 1\nempty:\nb: 2\n", encoding="utf-8")
    monkeypatch.setattr(source, "USE_LIBYAML", True)
    assert str(read_source(path).spans[("empty",)][0]).endswith("concord.yaml:2:7")

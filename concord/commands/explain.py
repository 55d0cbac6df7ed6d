"""`concord explain [-c FILE] --model M ... [REQUEST.json]` (SPEC §6): show how a request routes.

Builds the request context from the options and/or an OpenAI or Anthropic request body (options
win), runs the same `Graph.explain` the data plane's decide is built on, and prints the matched
route, why earlier routes missed, the attempt plan and every policy that applies. Never prints a
secret. Exit 0, 1 on an invalid config or request, 2 when a file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from concord.commands.test import EXIT_FAILED, EXIT_OK, EXIT_UNREADABLE, load_for_command
from concord.engine.graph import Graph, RequestContext

ENDPOINTS = ("chat", "completions", "embeddings", "messages")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="config file")
    parser.add_argument("request", nargs="?", metavar="REQUEST.json", help="a request body")
    parser.add_argument("--model", help="the model the client asks for")
    parser.add_argument("--endpoint", choices=ENDPOINTS, help="default: chat")
    parser.add_argument("--workspace", help="default: default")
    parser.add_argument("--key", help="API-key name")
    parser.add_argument("--user", help="end-user id")
    parser.add_argument("--tag", action="append", default=[], help="a key/workspace tag")
    parser.add_argument("--header", action="append", default=[], metavar="K=V")
    parser.add_argument("--metadata", action="append", default=[], metavar="K=V")
    parser.add_argument("--input-tokens", type=int, metavar="N")
    parser.add_argument("--max-tokens", type=int, metavar="N")
    parser.add_argument("--temperature", type=float, metavar="T")
    parser.add_argument("--stream", action="store_true", default=None)
    parser.add_argument("--budget-used", type=float, metavar="F", help="spend/limit, 0.0 and up")


def run(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {}
    if args.request:
        body, code = _read_body(args.request)
        if body is None:
            return code
        from concord.engine.explain import endpoint_of, request_fields

        fields.update(request_fields(body), endpoint=endpoint_of(body))
    try:
        fields.update(_option_fields(args))
    except ValueError as exc:
        print(f"concord explain: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not fields.get("model"):
        print("concord explain: give --model or a REQUEST.json with a model", file=sys.stderr)
        return EXIT_FAILED
    graph, code = load_for_command(args.config, "explain")
    if graph is None:
        return code
    from concord.engine.explain import render

    ctx = _context(graph, fields)
    sys.stdout.write(render(graph.explain(ctx), graph, ctx))
    return EXIT_OK


def _read_body(path: str) -> tuple[dict[str, Any] | None, int]:
    try:
        with open(path, encoding="utf-8") as handle:
            body = json.load(handle)
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return None, EXIT_UNREADABLE
    except json.JSONDecodeError as exc:
        print(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}", file=sys.stderr)
        return None, EXIT_FAILED
    if not isinstance(body, dict):
        print(f"{path}: a request body must be a JSON object", file=sys.stderr)
        return None, EXIT_FAILED
    return body, EXIT_OK


def _option_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Fields given as options; they override what the body says."""
    out: dict[str, Any] = {}
    for name in ("model", "endpoint", "workspace", "key", "user", "input_tokens", "max_tokens",
                 "temperature", "stream", "budget_used"):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            out[name] = value
    if args.tag:
        out["tags"] = args.tag
    if args.header:
        out["headers"] = {k.lower(): v for k, v in _pairs(args.header, "--header")}
    if args.metadata:
        out["metadata"] = dict(_pairs(args.metadata, "--metadata"))
    return out


def _pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} expects KEY=VALUE, got '{item}'")
        pairs.append((key, value))
    return pairs


def _context(graph: Graph, fields: dict[str, Any]) -> RequestContext:
    """The context the data plane would build: request tags include the workspace's."""
    workspace = fields.get("workspace", "default")
    declared = graph.workspaces.get(workspace)
    tags = frozenset(fields.get("tags", ())) | (declared.tags if declared else frozenset())
    return RequestContext(
        endpoint=fields.get("endpoint", "chat"),
        model=fields["model"],
        workspace=workspace,
        key=fields.get("key"),
        user=fields.get("user"),
        tags=tags,
        headers=fields.get("headers", {}),
        metadata=fields.get("metadata", {}),
        input_tokens=fields.get("input_tokens", 0),
        max_tokens=fields.get("max_tokens"),
        temperature=fields.get("temperature"),
        stream=bool(fields.get("stream", False)),
        tools=bool(fields.get("tools", False)),
        images=bool(fields.get("images", False)),
        budget_used=fields.get("budget_used", 0.0),
    )

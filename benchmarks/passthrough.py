"""The floor for this stack: a bare Starlette + aiohttp pass-through with no gateway logic.

    python benchmarks/passthrough.py UPSTREAM_URL PORT

Forwards POST /v1/chat/completions to UPSTREAM_URL with one pooled aiohttp session, streams
included, so `bench_gateway.py` can report Concord's cost relative to the least this stack can do.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def build(upstream: str) -> Starlette:
    session: dict[str, aiohttp.ClientSession] = {}

    async def forward(request: Request) -> Response:
        if "s" not in session:
            session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
        body = await request.body()
        upstream_response = await session["s"].post(
            upstream + "/v1/chat/completions",
            data=body,
            headers={"content-type": "application/json"},
        )
        kind = upstream_response.headers.get("content-type", "application/json")
        if kind.startswith("text/event-stream"):

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in upstream_response.content.iter_any():
                        yield chunk
                finally:
                    upstream_response.release()

            return StreamingResponse(chunks(), media_type="text/event-stream")
        content = await upstream_response.read()
        upstream_response.release()
        return Response(content, status_code=upstream_response.status, media_type=kind)

    return Starlette(routes=[Route("/v1/chat/completions", forward, methods=["POST"])])


if __name__ == "__main__":
    uvicorn.run(
        build(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )

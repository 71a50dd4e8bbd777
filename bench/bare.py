"""The ceiling of the HTTP layer: aiohttp + uvloop + orjson that parses the body and answers 202.

Usage: python bench/bare.py PORT
"""

from __future__ import annotations

import sys

import orjson
import uvloop
from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    if not isinstance(body, dict):
        return web.json_response({"error": "not an object"}, status=400)
    return web.Response(body=b'{"status":"pending"}', status=202, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/api/v1/workflows/{token}/tasks", accept)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
        reuse_port=True,
    )


if __name__ == "__main__":
    main()

"""The typical quick queue service: one JSON file holding every queue, read and rewritten (and
fsynced) on each request. Its cost grows with the backlog; it is here to show why mq exists.
Run: python -m bench.jsonfile PORT DIRECTORY
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from aiohttp import web


def make_app(directory: Path) -> web.Application:
    path = directory / "queues.json"

    def load() -> dict:
        return json.loads(path.read_text()) if path.exists() else {"next_id": 1, "queues": {}}

    def save(state: dict) -> None:
        temporary = path.with_suffix(".tmp")
        with open(temporary, "w") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    async def create(request: web.Request) -> web.Response:
        name = (await request.json())["name"]
        state = load()
        state["queues"].setdefault(name, [])
        save(state)
        return web.json_response({"name": name}, status=201)

    async def send(request: web.Request) -> web.Response:
        body = await request.json()
        state = load()
        items = body.get("messages", [body])
        ids = []
        for item in items:
            state["queues"][request.match_info["name"]].append([state["next_id"], item["content"]])
            ids.append(state["next_id"])
            state["next_id"] += 1
        save(state)
        return web.json_response({"ids": ids} if "messages" in body else {"id": ids[0]}, status=201)

    async def receive(request: web.Request) -> web.Response:
        state = load()
        queue = state["queues"][request.match_info["name"]]
        if not queue:
            return web.Response(status=204)
        message_id, content = queue.pop(0)
        save(state)
        return web.json_response({"id": message_id, "content": content})

    app = web.Application()
    app.router.add_post("/queues", create)
    app.router.add_post("/queues/{name}/messages", send)
    app.router.add_get("/queues/{name}/messages", receive)
    return app


if __name__ == "__main__":
    app = make_app(Path(sys.argv[2]))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)

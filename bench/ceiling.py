"""Our HTTP ceiling: the same routes as mqd, answered by aiohttp from a deque in memory.

No storage, no validation beyond parsing the JSON: what aiohttp itself costs per request on this
machine, so mqd's figures can be read as a fraction of what its HTTP layer allows.
Run: python -m bench.ceiling PORT DIRECTORY
"""

from __future__ import annotations

import collections
import sys

from aiohttp import web


def make_app() -> web.Application:
    queues: dict[str, collections.deque] = collections.defaultdict(collections.deque)
    counter = [0]

    async def create(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"created": True}, status=201)

    async def send(request: web.Request) -> web.Response:
        body = await request.json()
        queue = queues[request.match_info["name"]]
        if "messages" in body:
            ids = []
            for item in body["messages"]:
                counter[0] += 1
                queue.append((counter[0], item["content"]))
                ids.append(counter[0])
            return web.json_response({"ids": ids}, status=201)
        counter[0] += 1
        queue.append((counter[0], body["content"]))
        return web.json_response({"id": counter[0]}, status=201)

    async def receive(request: web.Request) -> web.Response:
        queue = queues[request.match_info["name"]]
        if not queue:
            return web.Response(status=204)
        message_id, content = queue.popleft()
        return web.json_response({"id": message_id, "content": content})

    app = web.Application()
    app.router.add_post("/queues", create)
    app.router.add_post("/queues/{name}/messages", send)
    app.router.add_get("/queues/{name}/messages", receive)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)

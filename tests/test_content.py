"""Message content comes back exactly as it was sent: the same JSON text, numbers included.

Generated numbers of every shape (beyond a double's precision and range, integers of any length)
and generated documents, through the API (single and batch sends, both stores) and through mqctl.
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NUMBERS = st.from_regex(r"\A-?(0|[1-9][0-9]{0,60})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,4})?\Z")
STRINGS = st.text(st.characters(exclude_categories=())).map(json.dumps)  # lone surrogates and NULs too
SCALARS = st.one_of(NUMBERS, STRINGS, st.sampled_from(["true", "false", "null"]))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
        st.dictionaries(STRINGS, children, max_size=4).map(
            lambda members: "{" + ",\n ".join(f"{k}: {v}" for k, v in members.items()) + "}"
        ),
    ),
    max_leaves=12,
)
JSON = {"Content-Type": "application/json"}
EXAMPLES = settings(
    max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)


def without_spaces(text: str) -> str:
    """JSON text without the whitespace between tokens (what mqd keeps of a content)."""
    return re.sub(r'("[^"\\]*(?:\\.[^"\\]*)*")|\s+', lambda m: m.group(1) or "", text)


def one(content: str, *, spaced: bool = False) -> str:
    """The body of a send of one message whose content is the JSON text ``content``."""
    return ('{ "content" : ' if spaced else '{"content": ') + content + " }"


def content_text(reply: bytes) -> str:
    """The content's JSON text in a reply of one message (mqd writes replies compactly)."""
    start = reply.index(b'"content":') + len(b'"content":')
    end = reply.rindex(b',"attempts":')
    return reply[start:end].decode()


async def test_numbers_json_cannot_hold_in_a_double_come_back_as_sent(client):
    await client.post("/queues", json={"name": "q"})
    sent = "[1e-400, 9007199254740993.0, 0.1000000000000000000001, 123456789012345678901234567890.5, 1E400]"
    await client.post("/queues/q/messages", data=one(sent), headers=JSON)
    reply = await (await client.get("/queues/q/messages")).read()
    assert content_text(reply) == without_spaces(sent)


@EXAMPLES
@given(document=DOCUMENTS)
async def test_any_content_comes_back_as_the_same_json_text(client, document):
    await client.post("/queues", json={"name": "q"})
    response = await client.post("/queues/q/messages", data=one(document, spaced=True), headers=JSON)
    assert response.status == 201, await response.text()
    reply = await (await client.get("/queues/q/messages")).read()
    assert content_text(reply) == without_spaces(document)


@EXAMPLES
@given(documents=st.lists(DOCUMENTS, min_size=1, max_size=6))
async def test_batch_contents_come_back_as_the_same_json_text(client, documents):
    await client.post("/queues", json={"name": "q"})
    items = ",".join(
        one(d) if i % 2 else '{"delay": 0, "content": ' + d + "}" for i, d in enumerate(documents)
    )
    body = '{"messages": [' + items + "]}"
    response = await client.post("/queues/q/messages", data=body, headers=JSON)
    assert response.status == 201, await response.text()
    for document in documents:
        reply = await (await client.get("/queues/q/messages")).read()
        assert content_text(reply) == without_spaces(document)


async def test_a_content_nested_too_deeply_is_refused_with_a_sentence(client):
    await client.post("/queues", json={"name": "q"})
    response = await client.post("/queues/q/messages", data=one("[" * 513 + "]" * 513), headers=JSON)
    assert response.status == 400 and "nested" in (await response.json())["error"]
    response = await client.post("/queues/q/messages", data=one("[" * 512 + "]" * 512), headers=JSON)
    assert response.status == 201


def test_mqctl_sends_and_prints_json_numbers_exactly(running):
    numbers = "[1e-400, 9007199254740993.0, 0.1000000000000000000001, 1" + "0" * 5000 + "]"
    assert running("send", "q", "--json", numbers).returncode == 0
    lines = "2.50\n[1E5, 0.30000000000000004]\n"
    assert running("send", "q", "--lines", "--json", input=lines).returncode == 0
    printed = running("receive", "q", "--count", "3").stdout.splitlines()
    assert printed == [without_spaces(numbers), "2.50", "[1E5,0.30000000000000004]"]
    assert running("send", "q", "--json", '{"n": 1.10}').returncode == 0
    whole = running("receive", "q", "--json").stdout
    assert '"content":{"n":1.10}' in whole and json.loads(whole)["content"] == {"n": 1.1}

"""The OpenAPI document describes exactly the routes the application serves, types every reply,
and says the limits the parser enforces (checked by sending the edges of each)."""

from __future__ import annotations

import pytest

from mqd import console, contract, openapi
from mqd.app import create_app
from mqd.config import Config


def served_routes() -> set[tuple[str, str]]:
    """The API's routes: the web console's pages are for browsers, not part of the API."""
    app = create_app(Config())
    return {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.name not in console.ROUTE_NAMES
    }


def documented_routes() -> set[tuple[str, str]]:
    methods = {"get", "post", "put", "patch", "delete", "head", "options"}
    return {
        (path, method)
        for path, item in openapi.document()["paths"].items()
        for method in item
        if method in methods
    }


def test_every_served_route_is_documented_and_nothing_else():
    """In the OpenAPI document, but the WebSocket's upgrade, whose frames docs/streams.md lists
    (the document's description says so)."""
    websockets = {(route.path, route.method.lower()) for route in contract.ROUTES if route.websocket}
    assert websockets and served_routes() - websockets == documented_routes()
    assert "docs/streams.md" in openapi.document()["info"]["description"]


def test_every_path_parameter_is_declared():
    for path, item in openapi.document()["paths"].items():
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        in_path = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert declared == in_path, path


def test_every_operation_documents_its_errors_with_the_error_schema():
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    expected = "Failed" if (path, status) == ("/status", "503") else "Error"
                    assert schema == {"$ref": f"#/components/schemas/{expected}"}, (path, method, status)


def operations():
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield path, method, operation


def test_every_operation_has_a_readable_id_a_tag_and_the_replies_every_route_may_give():
    ids = [operation["operationId"] for _, _, operation in operations()]
    http = [route.operation for route in contract.ROUTES if not route.websocket]
    assert sorted(ids) == sorted(http) and len(set(ids)) == len(ids)
    for path, method, operation in operations():
        assert operation["tags"], (path, method)
        assert {"401", "403", "500", "503"} <= set(operation["responses"]), (path, method)


def test_every_reply_with_a_body_is_typed():
    schemas = openapi.document()["components"]["schemas"]
    for path, method, operation in operations():
        if path in ("/openapi.json", "/metrics"):
            continue
        for status, response in operation["responses"].items():
            for media in response.get("content", {}).values():
                reference = media["schema"]["$ref"].rsplit("/", 1)[1]
                assert reference in schemas, (path, method, status)


def test_every_object_schema_names_its_required_fields():
    for name, schema in openapi.document()["components"]["schemas"].items():
        optional = schema.get("minProperties") or name == "Release"  # any field (or none) will do
        if schema.get("type") == "object" and schema.get("properties") and not optional:
            assert schema.get("required"), name


def test_a_leased_receive_links_to_ack_extend_and_release_with_its_receipt():
    receive = openapi.document()["paths"]["/queues/{name}/messages"]["get"]
    links = receive["responses"]["200"]["links"]
    assert {link["operationId"] for link in links.values()} == {"ackMessage", "extendLease", "releaseMessage"}
    receipts = {link["parameters"]["receipt"] for link in links.values()}
    assert receipts == {"$response.body#/receipt", "$response.body#/messages/0/receipt"}
    send = openapi.document()["paths"]["/queues/{name}/messages"]["post"]
    assert send["responses"]["201"]["links"]["lease"]["parameters"]["lease"] == 30  # so receipts exist


def test_the_bearer_token_is_a_security_scheme():
    document = openapi.document()
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


@pytest.mark.parametrize("field", [contract.COUNT, contract.LEASE, contract.WAIT], ids=lambda f: f.name)
async def test_the_parser_takes_each_query_limit_the_document_says_and_nothing_beyond(client, field):
    await client.post("/queues", json={"name": "q"})
    documented = next(
        p["schema"]
        for p in openapi.document()["paths"]["/queues/{name}/messages"]["get"]["parameters"]
        if p["name"] == field.name
    )
    for value in (documented["minimum"], documented["maximum"]):
        await client.post("/queues/q/messages", json={"content": "there"})  # so a long-poll returns at once
        response = await client.get("/queues/q/messages", params={field.name: str(value)})
        assert response.status == 200, (field.name, value)
    beyond = documented["maximum"] + (1 if documented["type"] == "integer" else 0.5)
    below = documented["minimum"] - (1 if documented["type"] == "integer" else 0.5)
    for value in (beyond, below):
        response = await client.get("/queues/q/messages", params={field.name: str(value)})
        assert response.status == 400, (field.name, value)


@pytest.mark.parametrize(
    ("schema", "field", "body"),
    [
        (
            "QueueSettings",
            "max_attempts",
            lambda v: {"name": "x", "max_attempts": v, "dead_letter_queue": "q"},
        ),
        ("QueueSettings", "dedup_window", lambda v: {"name": "x", "dedup_window": v}),
        ("NewMessage", "delay", lambda v: {"content": 1, "delay": v}),
    ],
)
async def test_the_parser_takes_each_body_limit_the_document_says_and_nothing_beyond(
    client, schema, field, body
):
    await client.post("/queues", json={"name": "q"})
    limits = openapi.document()["components"]["schemas"][schema]["properties"][field]
    path = "/queues" if schema == "QueueSettings" else "/queues/q/messages"
    for value in (limits["minimum"], limits["maximum"]):
        await client.delete("/queues/x")
        assert (await client.post(path, json=body(value))).status in (200, 201), (field, value)
    for value in (limits["maximum"] + 1, limits["minimum"] - 1):
        await client.delete("/queues/x")
        assert (await client.post(path, json=body(value))).status == 400, (field, value)


async def test_the_document_is_served(client):
    response = await client.get("/openapi.json")
    document = await response.json()
    assert response.status == 200 and document["openapi"].startswith("3.")
    assert document == openapi.document()

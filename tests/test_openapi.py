"""The OpenAPI document describes exactly the routes the application serves."""

from __future__ import annotations

from mqd import openapi
from mqd.app import create_app
from mqd.config import Config


def served_routes() -> set[tuple[str, str]]:
    app = create_app(Config())
    return {(route.resource.canonical, route.method.lower()) for route in app.router.routes()}


def documented_routes() -> set[tuple[str, str]]:
    methods = {"get", "post", "put", "patch", "delete", "head", "options"}
    return {
        (path, method)
        for path, item in openapi.document()["paths"].items()
        for method in item
        if method in methods
    }


def test_every_served_route_is_documented_and_nothing_else():
    assert served_routes() == documented_routes()


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
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)


async def test_the_document_is_served(client):
    response = await client.get("/openapi.json")
    document = await response.json()
    assert response.status == 200 and document["openapi"].startswith("3.")
    assert document == openapi.document()

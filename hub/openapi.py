"""The OpenAPI 3.1 document of the hub's JSON API, generated from the views' own declarations.

Each API view carries an :func:`operation` decorator saying what it does, which pydantic model its
request body is and which model each response status returns. :func:`build_document` walks the Flask
app's URL map, takes the path and method from the rule, the security from the view's
``token_required`` marker (:mod:`hub.web.auth`), and turns the models into JSON Schema with pydantic
(``$defs`` hoisted into ``components/schemas``). Nothing is written by hand twice, so the document
cannot drift from the code; :func:`undocumented` names any ``/api`` view that lacks a declaration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

OPENAPI_VERSION = "3.1.0"
API_PREFIX = "/api/"
REF_TEMPLATE = "#/components/schemas/{model}"
BEARER_SCHEME = "bearerAuth"
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
_RULE_ARG = re.compile(r"<(?:(?P<converter>[a-z_]+)(?:\([^>]*\))?:)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)>")
_CONVERTER_SCHEMAS: dict[str, dict[str, Any]] = {
    "default": {"type": "string"},
    "string": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}

#: A response body: a pydantic model, a raw JSON Schema, or None for no body.
Body = type[BaseModel] | Mapping[str, Any] | None


class OpenApiError(RuntimeError):
    """An API view's declaration cannot be turned into the document; the message names the view."""


@dataclass(frozen=True, slots=True)
class Param:
    """A query or path parameter: its JSON Schema and what it means."""

    name: str
    schema: Mapping[str, Any]
    description: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class Operation:
    """What :func:`operation` records on a view."""

    summary: str
    description: str
    responses: Mapping[int, tuple[str, Body]]
    request: type[BaseModel] | None = None
    query: tuple[Param, ...] = ()
    path: tuple[Param, ...] = ()
    tags: tuple[str, ...] = ()


def operation(
    *,
    summary: str,
    responses: Mapping[int, tuple[str, Body]],
    request: type[BaseModel] | None = None,
    query: Iterable[Param] = (),
    path: Iterable[Param] = (),
    tags: Iterable[str] = (),
    description: str | None = None,
) -> Callable:
    """Declare an API view for the OpenAPI document (put it between the route and ``token_required``).

    ``responses`` maps each status the view itself returns to ``(description, body)``; 401 and 403
    are added for token-guarded views. ``description`` defaults to the view's docstring.
    """
    op_responses = dict(responses)
    op_request = request
    op_query, op_path, op_tags = tuple(query), tuple(path), tuple(tags)

    def decorate(view: Callable) -> Callable:
        view.openapi_operation = Operation(  # type: ignore[attr-defined]
            summary=summary,
            description=description if description is not None else _docstring(view),
            responses=op_responses,
            request=op_request,
            query=op_query,
            path=op_path,
            tags=op_tags,
        )
        return view

    return decorate


def _docstring(view: Callable) -> str:
    return " ".join((view.__doc__ or "").split())


# ------------------------------------------------------------------------------------- the document


def api_routes(app: Flask) -> list[tuple[str, str, str]]:
    """Every ``(rule, method, endpoint)`` under ``/api/`` in the app's URL map (HEAD and OPTIONS left out)."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX):
            continue
        for method in sorted((rule.methods or set()) - _IGNORED_METHODS):
            found.append((rule.rule, method, rule.endpoint))
    return sorted(found)


def undocumented(app: Flask) -> list[str]:
    """``"METHOD /rule"`` of every ``/api`` view without an :func:`operation` declaration."""
    return [
        f"{method} {rule}"
        for rule, method, endpoint in api_routes(app)
        if getattr(app.view_functions[endpoint], "openapi_operation", None) is None
    ]


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: ``/api/v1/passes/<pass_id>`` → ``/api/v1/passes/{pass_id}``."""
    return _RULE_ARG.sub(lambda m: "{" + m.group("name") + "}", rule)


def _rule_params(rule: str) -> dict[str, Mapping[str, Any]]:
    return {
        m.group("name"): _CONVERTER_SCHEMAS.get(m.group("converter") or "default", {"type": "string"})
        for m in _RULE_ARG.finditer(rule)
    }


class _Schemas:
    """Collects pydantic models and produces their JSON Schema with shared ``components/schemas``."""

    def __init__(self) -> None:
        self._wanted: dict[tuple[type[BaseModel], str], None] = {}

    def want(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> None:
        self._wanted[(model, mode)] = None

    def build(self) -> tuple[dict[tuple[type[BaseModel], str], dict[str, Any]], dict[str, Any]]:
        if not self._wanted:
            return {}, {}
        refs, top = models_json_schema(list(self._wanted), ref_template=REF_TEMPLATE)  # type: ignore[arg-type]
        return dict(refs), dict(top.get("$defs", {}))


def _body_schema(body: Body, refs: Mapping[tuple[type[BaseModel], str], dict[str, Any]], mode: str):
    if body is None:
        return None
    if isinstance(body, type) and issubclass(body, BaseModel):
        return refs[(body, mode)]
    return dict(body)


def build_document(
    app: Flask,
    *,
    title: str,
    version: str,
    description: str = "",
    error_model: type[BaseModel] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared ``/api`` view of ``app``.

    ``error_model`` is the body of the 401/403 answers added to token-guarded views. Raises
    :class:`OpenApiError` when a declaration does not fit its rule (a path parameter it does not have,
    a view serving several methods).
    """
    schemas = _Schemas()
    if error_model is not None:
        schemas.want(error_model, "serialization")
    routes = []
    seen_endpoints: dict[str, str] = {}
    for rule, method, endpoint in api_routes(app):
        view = app.view_functions[endpoint]
        op: Operation | None = getattr(view, "openapi_operation", None)
        if op is None:
            continue
        if seen_endpoints.setdefault(endpoint, method) != method:
            raise OpenApiError(f"view {endpoint} serves several methods: give each method its own view")
        routes.append((rule, method, view, op))
        if op.request is not None:
            schemas.want(op.request, "validation")
        for _description, body in op.responses.values():
            if isinstance(body, type) and issubclass(body, BaseModel):
                schemas.want(body, "serialization")
    refs, components = schemas.build()

    paths: dict[str, dict[str, Any]] = {}
    for rule, method, view, op in routes:
        paths.setdefault(openapi_path(rule), {})[method.lower()] = _operation_doc(
            rule, method, view, op, refs, error_model
        )
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                BEARER_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token made by an admin (antoan-hub or the admin pages).",
                }
            },
        },
    }
    return doc


def _operation_doc(rule, method, view, op: Operation, refs, error_model) -> dict[str, Any]:
    endpoint_name = getattr(view, "__name__", "view")
    rule_params = _rule_params(rule)
    declared = {p.name: p for p in op.path}
    unknown = set(declared) - set(rule_params)
    if unknown:
        raise OpenApiError(f"{method} {rule}: declared path parameters {sorted(unknown)} are not in the rule")
    parameters: list[dict[str, Any]] = []
    for name, converter_schema in rule_params.items():
        param = declared.get(name)
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": dict(param.schema) if param else dict(converter_schema),
                "description": param.description if param else name,
            }
        )
    for param in op.query:
        parameters.append(
            {
                "name": param.name,
                "in": "query",
                "required": param.required,
                "schema": dict(param.schema),
                "description": param.description,
            }
        )
    doc: dict[str, Any] = {
        "operationId": f"{endpoint_name}_{method.lower()}",
        "summary": op.summary,
        "description": op.description,
    }
    if op.tags:
        doc["tags"] = list(op.tags)
    if parameters:
        doc["parameters"] = parameters
    if op.request is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.request, "validation")]}},
        }
    responses: dict[str, Any] = {}
    statuses = dict(op.responses)
    auth_kind = getattr(view, "auth_kind", None)
    roles = getattr(view, "allowed_roles", None)
    if auth_kind == "token":
        statuses.setdefault(401, ("No valid bearer token.", error_model))
        statuses.setdefault(403, ("The token's role may not use this operation.", error_model))
        doc["security"] = [{BEARER_SCHEME: []}]
        role_names = sorted(str(getattr(r, "value", r)) for r in roles or ())
        doc["x-roles"] = role_names
        doc["description"] = (doc["description"] + f" Roles: {', '.join(role_names)}.").strip()
    elif auth_kind == "public":
        doc["security"] = []
    for status in sorted(statuses):
        description, body = statuses[status]
        entry: dict[str, Any] = {"description": description}
        schema = _body_schema(body, refs, "serialization")
        if schema is not None:
            entry["content"] = {"application/json": {"schema": schema}}
        responses[str(status)] = entry
    doc["responses"] = responses
    return doc

"""The OpenAPI 3.1 document every sidecar serves at `GET /openapi.json` (open, like /health).

The skeleton documents what it owns (/health, /metrics, the error body, the optional bearer key);
each sidecar adds its own paths (`SidecarAPI.openapi_paths`), written with the helpers below.
Websocket endpoints are not HTTP operations: API.md describes them.
"""

from __future__ import annotations

from typing import Any

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_DESCRIPTIONS = {
    400: "invalid request (the error code and message say what)",
    401: "missing or invalid key (SIDECAR_API_KEY)",
    413: "body too large",
    429: "overloaded: retry after Retry-After seconds",
    500: "internal error (details in the service log)",
    502: "the engine failed",
    503: "not ready, or overloaded",
    504: "the engine timed out",
}


def errors(*codes: int) -> dict[str, Any]:
    """Error responses for `codes`, all with the one error body."""
    return {
        str(code): {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": ERROR_REF}},
        }
        for code in codes
    }


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def binary_content(*media_types: str) -> dict[str, Any]:
    return {media_type: {"schema": {"type": "string", "format": "binary"}} for media_type in media_types}


def openapi_document(
    *, title: str, version: str, description: str, paths: dict[str, Any], secured: bool
) -> dict[str, Any]:
    """The whole document: the skeleton's paths, the sidecar's `paths` (each operation needs the
    bearer key when `secured`), the error schema and the security scheme."""
    own = {
        path: {
            method: {**operation, "security": [{"bearerAuth": []}]} if secured else operation
            for method, operation in item.items()
        }
        for path, item in paths.items()
    }
    plain = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": {
            "/health": {
                "get": {
                    "summary": "Readiness: 200 once loaded and warm; 503 before, and while stopping.",
                    "responses": {"200": plain, "503": plain},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics.",
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            **own,
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                }
            },
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }

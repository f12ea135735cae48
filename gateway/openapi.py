"""The inference API in the OpenAPI schema (`/api/schema/`), next to the REST API.

The gateway's views are plain async Django views (no DRF serializers to introspect), so
their operations are written out here and added by a drf-spectacular post-processing hook.
The schema states what `gateway/parsing.py` accepts; the fuzz test
(`tests/faults/test_inference_fuzz.py`) holds the two together.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from gateway.parsing import MAX_APP_ID_LENGTH, MAX_STOP_SEQUENCES

_ERROR = {"$ref": "#/components/schemas/InferenceError"}
_STRING_OR_LIST = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP_SEQUENCES},
    ]
}
_COMMON: dict[str, Any] = {
    "model": {"type": "string", "description": "A served model's id (GET /v1/models)."},
    "max_tokens": {"type": "integer", "minimum": 1, "nullable": True},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1},
    "n": {"type": "integer", "enum": [1]},
    "stop": {**_STRING_OR_LIST, "nullable": True},
    "seed": {"type": "integer", "nullable": True},
    "stream": {"type": "boolean"},
    "stream_options": {
        "type": "object",
        "nullable": True,
        "properties": {
            "include_usage": {"type": "boolean"},
            "continuous_usage_stats": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
    "user": {"type": "string"},
    "app": {"type": "string", "minLength": 1, "maxLength": MAX_APP_ID_LENGTH},
    "ignore_eos": {"type": "boolean"},
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"type": "string"},
    },
}
_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        **_COMMON,
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "nullable": True},
    },
    "additionalProperties": False,
}
_COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {**_COMMON, "prompt": {"type": "string", "minLength": 1}},
    "additionalProperties": False,
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "The body is invalid: `error.param` names the field.",
        401: "No valid API key.",
        404: "Unknown model.",
        405: "Wrong method.",
        413: "The body is too large.",
        429: "The tenant's limit or queue is full: retry after `Retry-After`.",
        502: "The worker's answer was lost (`answer_lost`, `stream_unreadable`).",
        503: "No engine worker is taking requests (`no_engine`), or a store is down.",
        504: "The engine pool did not answer in time.",
    }
    return {
        str(status): {
            "description": reasons[status],
            "content": {"application/json": {"schema": _ERROR}},
        }
        for status in statuses
    }


def _generation(operation: str, summary: str, request: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation,
            "tags": ["inference"],
            "summary": summary,
            "security": [{"tenantKey": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request}},
            },
            "responses": {
                "200": {
                    "description": "The completion (JSON), or its chunks (`text/event-stream`).",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_errors(400, 401, 405, 413, 429, 502, 503, 504),
            },
        }
    }


def _served(request: dict[str, Any]) -> dict[str, Any]:
    """The request schema with `model` limited to the models this deployment serves."""
    model = {**request["properties"]["model"], "enum": [settings.PARITY_MODEL_NAME]}
    return {**request, "properties": {**request["properties"], "model": model}}


def add_inference_paths(result: dict[str, Any], **_: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: add the OpenAI-compatible endpoints."""
    result.setdefault("paths", {}).update(
        {
            "/v1/models": {
                "get": {
                    "operationId": "inference_models_list",
                    "tags": ["inference"],
                    "summary": "The served models",
                    "security": [{"tenantKey": []}],
                    "responses": {
                        "200": {
                            "description": "The models",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors(401),
                    },
                }
            },
            "/v1/chat/completions": _generation(
                "inference_chat_completions_create", "A chat completion", _served(_CHAT_REQUEST)
            ),
            "/v1/completions": _generation(
                "inference_completions_create", "A text completion", _served(_COMPLETION_REQUEST)
            ),
        }
    )
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["InferenceError"] = _ERROR_SCHEMA
    components.setdefault("securitySchemes", {})["tenantKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A tenant's API key.",
    }
    return result

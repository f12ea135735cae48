"""The inference API refuses bad requests with OpenAI-style errors naming the field.

Refusals happen before anything reaches the engine pool, so no worker is needed here.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from tenants.models import IssuedKey, Tenant, TenantStatus
from wire import runtime
from wire.local_gate import LocalGate


def post(client: Client, path: str, body: Any, key: IssuedKey | None = None) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key.secret}"} if key else {}
    return client.post(path, body, content_type="application/json", **headers)


def chat(**overrides: Any) -> dict[str, Any]:
    return {
        "model": "parity-tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        **overrides,
    }


def error_of(response: Any) -> dict[str, Any]:
    return response.json()["error"]


def test_a_request_without_a_key_is_a_401_with_a_bearer_challenge(db: None) -> None:
    response = post(Client(), "/v1/chat/completions", chat())

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response)["code"] == "missing_api_key"


def test_a_wrong_key_is_a_401(db: None) -> None:
    response = Client().post(
        "/v1/chat/completions",
        chat(),
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer pk_live_nope.nope",
    )

    assert response.status_code == 401
    assert error_of(response)["type"] == "authentication_error"


def test_a_suspended_tenant_is_a_403(acme: Tenant, alice_key: IssuedKey) -> None:
    acme.status = TenantStatus.SUSPENDED
    acme.save()

    response = post(Client(), "/v1/chat/completions", chat(), alice_key)

    assert response.status_code == 403
    assert error_of(response)["code"] == "tenant_suspended"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": None}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": {"user": 1}, "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 10_000}, "max_tokens"),
        ({"max_tokens": "8"}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"model": None}, "model"),
        ({"model": "gpt-9"}, "model"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 2}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"presence_penalty": 1.0}, "presence_penalty"),
        ({"surprise": 1}, "surprise"),
        ({"app": ""}, "app"),
        ({"app": "nul\x00app"}, "app"),
        ({"app": "tab\tapp"}, "app"),
        ({"messages": [{"role": "user", "content": "lone \ud800"}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udc80"}]}]},
            "messages[0].content",
        ),
        ({"stop": ["ok", "\udfff"]}, "stop"),
    ],
)
def test_a_bad_chat_field_is_a_400_naming_it(
    alice_key: IssuedKey, body: dict[str, Any], param: str
) -> None:
    response = post(Client(), "/v1/chat/completions", chat(**body), alice_key)

    assert response.status_code == 400
    assert error_of(response)["param"] == param
    assert error_of(response)["type"] == "invalid_request_error"


def test_an_unknown_model_says_which_models_exist(alice_key: IssuedKey) -> None:
    response = post(Client(), "/v1/chat/completions", chat(model="gpt-9"), alice_key)

    assert error_of(response)["code"] == "model_not_found"
    assert "parity-tiny" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": "\ud83d alone"}, "prompt"),
        ({"echo": True}, "echo"),
    ],
)
def test_a_bad_completion_field_is_a_400_naming_it(
    alice_key: IssuedKey, body: dict[str, Any], param: str
) -> None:
    payload = {"model": "parity-tiny", "prompt": "hello", **body}

    response = post(Client(), "/v1/completions", payload, alice_key)

    assert response.status_code == 400
    assert error_of(response)["param"] == param


def test_a_body_that_is_not_json_is_a_400(alice_key: IssuedKey) -> None:
    response = post(Client(), "/v1/chat/completions", "{not json", alice_key)

    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,  # nested far past the parser's recursion limit
        '{"model": "parity-tiny", "max_tokens": ' + "9" * 5000 + "}",  # past int()'s 4,300 digits
        b'{"model": "\xff\xfe"}',  # not UTF-8
    ],
)
def test_a_body_no_parser_can_read_is_a_400_not_a_500(alice_key: IssuedKey, raw: Any) -> None:
    response = post(Client(), "/v1/chat/completions", raw, alice_key)

    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_the_wrong_method_is_a_405_in_openai_shape(alice_key: IssuedKey) -> None:
    response = Client().get("/v1/chat/completions", HTTP_AUTHORIZATION=f"Bearer {alice_key.secret}")

    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_models_needs_a_key_and_lists_the_served_model(alice_key: IssuedKey) -> None:
    assert Client().get("/v1/models").status_code == 401

    response = Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {alice_key.secret}")

    assert [model["id"] for model in response.json()["data"]] == ["parity-tiny"]


def test_a_valid_request_with_no_engine_worker_running_is_a_503_saying_so(
    alice_key: IssuedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An in-process gate no worker ever joined: the pool is empty.
    monkeypatch.setattr(runtime, "_gates", {settings.PARITY_ENGINE_QUEUE: LocalGate()})

    response = post(Client(), "/v1/chat/completions", chat(), alice_key)

    assert response.status_code == 503
    assert error_of(response)["code"] == "no_engine"


def test_a_prompt_too_long_for_the_context_by_its_size_is_a_400_before_any_tokenizer(
    alice_key: IssuedKey,
) -> None:
    too_long = "x" * (settings.PARITY_MAX_MODEL_LEN * 16 + 1)

    response = post(
        Client(),
        "/v1/chat/completions",
        chat(messages=[{"role": "user", "content": too_long}]),
        alice_key,
    )

    assert response.status_code == 400
    assert (error_of(response)["param"], error_of(response)["code"]) == (
        "messages",
        "context_length_exceeded",
    )


def test_a_body_over_the_upload_limit_is_a_413_in_openai_shape(
    alice_key: IssuedKey, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = post(
        Client(),
        "/v1/chat/completions",
        chat(messages=[{"role": "user", "content": "x" * 2000}]),
        alice_key,
    )

    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"

"""The OpenAI-compatible endpoints. Thin: authenticate, parse, admit, relay events."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any, cast

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import RedisError
from rest_framework import exceptions

from tenants.authentication import ApiKeyAuthentication, TenantPrincipal
from tenants.inference import formatting
from tenants.inference.errors import OpenAIError
from tenants.inference.gateway import Call, error_from_event
from tenants.inference.parsing import ParsedRequest, ServedModel, load_body, parse_request
from workers import runtime
from workers.channels import Event
from workers.protocol import RequestKind

logger = logging.getLogger(__name__)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="parity"'}


def served_model() -> ServedModel:
    return ServedModel(settings.PARITY_MODEL_NAME, settings.PARITY_MAX_MODEL_LEN)


def openai_errors(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return view(request, *args, **kwargs)
        except OpenAIError as exc:
            return exc.response()
        except DatabaseError:
            logger.exception("database unavailable for %s", request.path)
            return _unavailable("The database is unavailable; retry shortly.")
        except RedisError:
            logger.exception("Redis unavailable for %s", request.path)
            return _unavailable("The token stream service is unavailable; retry shortly.")

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return csrf_exempt(wrapped)


def _unavailable(message: str) -> HttpResponseBase:
    return OpenAIError(message, status=503, code="unavailable").response()


def authenticate(request: HttpRequest) -> TenantPrincipal:
    try:
        result = ApiKeyAuthentication().authenticate(cast(Any, request))
    except exceptions.AuthenticationFailed as exc:
        raise OpenAIError(
            str(exc.detail), status=401, code="invalid_api_key", headers=_CHALLENGE
        ) from None
    except exceptions.PermissionDenied as exc:
        raise OpenAIError(str(exc.detail), status=403, code="tenant_suspended") from None
    if result is None:
        raise OpenAIError(
            "You didn't provide an API key: send 'Authorization: Bearer <your key>'.",
            status=401,
            code="missing_api_key",
            headers=_CHALLENGE,
        )
    return result[0]


def _require(request: HttpRequest, method: str) -> None:
    if request.method != method:
        raise OpenAIError(
            f"Use {method} on {request.path}.",
            status=405,
            code="method_not_allowed",
            headers={"Allow": method},
        )


@openai_errors
def models(request: HttpRequest) -> HttpResponse:
    """GET /v1/models: the models this deployment serves."""
    _require(request, "GET")
    authenticate(request)
    model = served_model()
    return JsonResponse(
        {"object": "list", "data": [formatting.model_card(model.name, model.max_model_len)]}
    )


@openai_errors
def chat_completions(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/chat/completions."""
    return _generate(request, RequestKind.CHAT)


@openai_errors
def completions(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/completions."""
    return _generate(request, RequestKind.COMPLETION)


def _generate(request: HttpRequest, kind: RequestKind) -> HttpResponseBase:
    _require(request, "POST")
    principal = authenticate(request)
    parsed = parse_request(
        load_body(request.body),
        kind,
        model=served_model(),
        tenant=principal.tenant.slug,
        tenant_id=principal.tenant.pk,
        api_key_id=principal.key.pk,
        app_header=request.headers.get("X-Parity-App"),
    )
    call = Call(runtime.channels(), parsed.generation, principal.tenant)
    call.admit()
    _release_database_connection()
    try:
        call.submit()
        events = call.events()
        first = _first_answer(events)
        if first["type"] == "error":
            raise error_from_event(first)
    except BaseException:
        call.close()
        raise
    if parsed.stream:
        return _streaming_response(call, parsed, chain([first], events))
    try:
        return _collect(call, parsed, chain([first], events))
    finally:
        call.close()


def _release_database_connection() -> None:
    """Everything from the database is read: give the connection back before the long wait.

    A streaming request lasts seconds to minutes; holding a PostgreSQL connection for each
    would cap concurrent requests at the server's max_connections (100 by default).
    """
    if not connection.in_atomic_block:
        connection.close()


def _first_answer(events: Iterator[Event | None]) -> Event:
    """Wait for the worker to accept (`start`) or refuse (`error`) the request."""
    for event in events:
        if event is not None:
            return event
    raise OpenAIError(
        "The engine pool ended the request without an answer.", status=502, code="no_answer"
    )


def _collect(call: Call, parsed: ParsedRequest, events: Iterator[Event | None]) -> HttpResponse:
    parts: list[str] = []
    for event in events:
        if event is None:
            continue
        if event["type"] == "start":
            parts.clear()  # a redelivery starts over; the first attempt's text is void
        elif event["type"] == "delta":
            parts.append(event["text"])
        elif event["type"] == "error":
            raise error_from_event(event)
        elif event["type"] == "done":
            body = formatting.complete_body(
                parsed.generation, "".join(parts), event["finish_reason"], event["usage"]
            )
            return JsonResponse(body)
    raise OpenAIError("The engine pool ended the request early.", status=502, code="no_answer")


def _streaming_response(
    call: Call, parsed: ParsedRequest, events: Iterator[Event | None]
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_sse(call, parsed, events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not hold tokens back
    return response


def _sse(call: Call, parsed: ParsedRequest, events: Iterator[Event | None]) -> Iterator[bytes]:
    request = parsed.generation
    sent_text = False
    try:
        yield formatting.sse(formatting.chunk(request, "", None, first=True))
        for event in events:
            if event is None:
                yield formatting.KEEPALIVE
            elif event["type"] == "delta":
                sent_text = True
                yield formatting.sse(formatting.chunk(request, event["text"], None))
            elif event["type"] == "start" and sent_text:
                # Tokens already sent cannot be taken back: end the stream with an error.
                yield formatting.sse(_stream_error("The worker restarted; retry.", "restarted"))
                return
            elif event["type"] == "error":
                yield formatting.sse(_stream_error(event["message"], event["code"]))
                return
            elif event["type"] == "done":
                reason = formatting.finish_reason(event["finish_reason"])
                yield formatting.sse(formatting.chunk(request, None, reason))
                if parsed.include_usage:
                    yield formatting.sse(formatting.usage_chunk(request, event["usage"]))
                yield formatting.DONE
                return
    except GeneratorExit:
        logger.info("the client of %s hung up; aborting it", request.request_id)
        call.abort()  # stop spending the engine on it
        raise
    except OpenAIError as exc:
        yield formatting.sse(_stream_error(exc.message, exc.code or "error"))
    finally:
        call.close()


def _stream_error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "api_error", "param": None, "code": code}}

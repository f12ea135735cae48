"""The OpenAI-compatible endpoints, async: authenticate (cached), parse, wait for a seat at
the fair gate, relay the engine's events. An open request is a coroutine, not a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import RedisError

from gateway import formatting
from gateway.auth import Principal, keys
from gateway.call import Call, error_from_event
from gateway.errors import OpenAIError
from gateway.parsing import ParsedRequest, ServedModel, load_body, parse_request
from wire import runtime
from wire.channels import Event
from wire.protocol import RequestKind

logger = logging.getLogger(__name__)
View = Callable[..., Awaitable[HttpResponseBase]]


def served_model() -> ServedModel:
    return ServedModel(settings.PARITY_MODEL_NAME, settings.PARITY_MAX_MODEL_LEN)


def openai_errors(view: View) -> View:
    async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return await view(request, *args, **kwargs)
        except OpenAIError as exc:
            return exc.response()
        except RequestDataTooBig:
            return OpenAIError(
                f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} "
                "bytes; send a shorter prompt.",
                status=413,
                code="request_too_large",
            ).response()
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


async def authenticate(request: HttpRequest) -> Principal:
    return await keys.authenticate(request.headers.get("Authorization"))


def _require(request: HttpRequest, method: str) -> None:
    if request.method != method:
        raise OpenAIError(
            f"Use {method} on {request.path}.",
            status=405,
            code="method_not_allowed",
            headers={"Allow": method},
        )


@openai_errors
async def models(request: HttpRequest) -> HttpResponse:
    """GET /v1/models: the models this deployment serves."""
    _require(request, "GET")
    await authenticate(request)
    model = served_model()
    return JsonResponse(
        {"object": "list", "data": [formatting.model_card(model.name, model.max_model_len)]}
    )


@openai_errors
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/chat/completions."""
    return await _generate(request, RequestKind.CHAT)


@openai_errors
async def completions(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/completions."""
    return await _generate(request, RequestKind.COMPLETION)


async def _generate(request: HttpRequest, kind: RequestKind) -> HttpResponseBase:
    _require(request, "POST")
    caller = await authenticate(request)
    parsed = parse_request(
        load_body(request.body),
        kind,
        model=served_model(),
        tenant=caller.tenant,
        tenant_id=caller.tenant_id,
        api_key_id=caller.key_id,
        app_header=request.headers.get("X-Parity-App"),
    )
    call = Call(runtime.channels(), runtime.gate(), parsed.generation, caller)
    try:
        await call.admit()
        await call.submit()
        events = call.events()
        first = await _first_answer(events)
        if first["type"] == "error":
            raise error_from_event(first)
    except BaseException:
        await _close(call, aborted=True)
        raise
    if parsed.stream:
        return _streaming_response(call, parsed, _prepend(first, events))
    completed = False
    try:
        response = await _collect(parsed, _prepend(first, events))
        completed = True
        return response
    finally:
        await _close(call, aborted=not completed)


async def _close(call: Call, *, aborted: bool) -> None:
    """Give the seat back and, if the client left early, stop the engine's work on it.

    Shielded: a disconnect cancels the view's task, and the seat must be returned anyway.
    """

    async def close() -> None:
        try:
            if aborted:
                await call.abort()
        except RedisError:  # the worker's abort sweep retries; the seat goes back anyway
            logger.warning("asking to abort %s failed", call.request_id, exc_info=True)
        finally:
            await call.close()

    await asyncio.shield(close())


async def _prepend(first: Event, rest: AsyncIterator[Event | None]) -> AsyncIterator[Event | None]:
    yield first
    async for event in rest:
        yield event


async def _first_answer(events: AsyncIterator[Event | None]) -> Event:
    """Wait for the worker to accept (`start`) or refuse (`error`) the request."""
    async for event in events:
        if event is not None:
            return event
    raise OpenAIError(
        "The engine pool ended the request without an answer.", status=502, code="no_answer"
    )


async def _collect(parsed: ParsedRequest, events: AsyncIterator[Event | None]) -> HttpResponse:
    parts: list[str] = []
    async for event in events:
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
    call: Call, parsed: ParsedRequest, events: AsyncIterator[Event | None]
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_sse(call, parsed, events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not hold tokens back
    return response


async def _sse(
    call: Call, parsed: ParsedRequest, events: AsyncIterator[Event | None]
) -> AsyncIterator[bytes]:
    request = parsed.generation
    finished = False
    try:
        yield formatting.sse(formatting.chunk(request, "", None, first=True))
        async for event in events:
            if event is None:
                yield formatting.KEEPALIVE
            elif event["type"] == "delta":
                piece = formatting.chunk(request, event["text"], None)
                if parsed.continuous_usage:
                    piece["usage"] = formatting.usage_so_far(
                        call.num_prompt_tokens, call.num_output_seen
                    )
                yield formatting.sse(piece)
            elif event["type"] == "start" and call.num_output_seen:
                # Tokens already sent cannot be taken back: end the stream with an error.
                # The request stops here, billed for what was sent (`Call._decide_restart`).
                message = (
                    f"The worker serving {request.request_id} stopped; the "
                    f"{call.num_output_seen} tokens sent are billed. Retry the request."
                )
                yield formatting.sse(_stream_error(message, "restarted"))
                return
            elif event["type"] == "error":
                finished = True
                yield formatting.sse(_stream_error(event["message"], event["code"]))
                return
            elif event["type"] == "done":
                finished = True
                reason = formatting.finish_reason(event["finish_reason"])
                yield formatting.sse(formatting.chunk(request, None, reason))
                if parsed.include_usage:
                    yield formatting.sse(formatting.usage_chunk(request, event["usage"]))
                yield formatting.DONE
                return
    except OpenAIError as exc:
        yield formatting.sse(_stream_error(exc.message, exc.code or "error"))
    finally:
        if not finished:
            logger.info("the stream of %s ended early; aborting it", request.request_id)
        await _close(call, aborted=not finished)


def _stream_error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "api_error", "param": None, "code": code}}

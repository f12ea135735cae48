"""ASGI entry point: `parity web` serves it with uvicorn.

`/v1/` (the inference gateway) goes to a Django handler with no middleware and no
per-request thread: every middleware of the site is synchronous (WhiteNoise among them),
and Django's handler gives each request a thread of its own for its sync code (a
`ThreadSensitiveContext`, entered for the request signals and the response's close).
Under a flood of 1,200 connections that was 800 threads in the web process and two
thread hops per request. The gateway authenticates with API keys (a cache miss is one
query on Django's sync thread), needs no session, CSRF or static files, and answers its
own errors. Everything else (admin, dashboard, REST API) is the full Django stack, whose
sync views run on threads; see README "Running in production".
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
site = get_asgi_application()

import asyncio  # noqa: E402

from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

GATEWAY_PREFIX = "/v1/"


class GatewayHandler(ASGIHandler):
    """Django's ASGI handler, minus the middleware chain."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        self._middleware_chain = convert_exception_to_response(
            self._get_response_async  # type: ignore[attr-defined]
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.handle(scope, receive, send)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's request cycle as a coroutine throughout: the view races the client's
        disconnect (which cancels it: the views give their seat back when cancelled), and
        the response is closed on the loop. `request_started` is not sent: its receivers
        reset the sync connections of the calling thread, and the loop's thread has none."""
        try:
            body = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, refusal = self.create_request(scope, body)
        if request is None:
            assert refusal is not None  # Django returns one of the two
            body.close()
            await self.send_response(refusal, send)
            refusal.close()
            return
        view = asyncio.ensure_future(self._respond(request, send))
        hangup = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((view, hangup), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (hangup, view):
                if not task.done():
                    task.cancel()
            outcome = await asyncio.gather(view, hangup, return_exceptions=True)
            body.close()
        if isinstance(outcome[0], BaseException) and not isinstance(
            outcome[0], asyncio.CancelledError | RequestAborted
        ):
            raise outcome[0]

    async def _respond(self, request: Any, send: Any) -> None:
        response = await self.run_get_response(request)
        try:
            await self.send_response(response, send)
        finally:
            response.close()


gateway = GatewayHandler()


async def lifespan(receive: Any, send: Any) -> None:
    """The server's start and stop: at the stop, the gateway closes its broker connection
    (a server may stop its loop and go on running, as the embedded mode and tests do)."""
    from gateway.call import publisher

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await publisher.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"].startswith(GATEWAY_PREFIX):
        await gateway(scope, receive, send)
    else:
        await site(scope, receive, send)

"""ASGI entry point: `parity web` serves it with uvicorn.

`/v1/` (the inference gateway) goes to a Django handler with no middleware: every
middleware of the site is synchronous (WhiteNoise among them), and Django would run each
request through a thread to call them, which is the per-request thread the async gateway
exists to avoid. The gateway authenticates with API keys, needs no session, CSRF or
static files, and answers its own errors. Everything else (admin, dashboard, REST API) is
the full Django stack, whose sync views run on threads; see README "Running in production".
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
site = get_asgi_application()

from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402

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


gateway = GatewayHandler()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"].startswith(GATEWAY_PREFIX):
        await gateway(scope, receive, send)
    else:
        await site(scope, receive, send)

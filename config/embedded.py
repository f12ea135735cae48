"""Embedded mode: the web server and an engine worker in one process, no external service.

`python -m config.embedded [ADDR:PORT]` serves the admin, the REST API and the inference
API (uvicorn, as `parity web`) while a Celery worker (in-memory broker, threads pool) hosts the
vLLM engine, on the CPU with the tiny local model unless told otherwise. The code paths
are production's; only the configuration differs (SQLite, memory broker, in-process
channels instead of Redis).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

logger = logging.getLogger("parity.embedded")


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedded model is local; never download
    import django

    django.setup()
    from django.conf import settings

    address = argv[0] if argv else "127.0.0.1:8000"
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        print(f"usage: python -m config.embedded [HOST:PORT]  (got {address!r})", file=sys.stderr)
        return 2
    _ensure_model(settings)
    _serve_http(host, int(port))
    return _run_worker(settings)


def _ensure_model(settings: object) -> None:
    from workers.tiny_model import ensure_tiny_model

    path = Path(str(settings.PARITY_MODEL_PATH))  # type: ignore[attr-defined]
    if (path / "config.json").exists():
        return
    if settings.PARITY_MODEL_NAME != "parity-tiny":  # type: ignore[attr-defined]
        raise SystemExit(f"PARITY_MODEL_PATH={path} holds no model (no config.json).")
    print(f"writing the tiny demo model to {path} ...")
    ensure_tiny_model(path)


def _serve_http(host: str, port: int) -> None:
    import uvicorn

    from config.server_options import SERVER_OPTIONS

    # The production server and app (`parity web`), on a thread of this process.
    config = uvicorn.Config(
        "config.asgi:application", host=host, port=port, log_level="warning", **SERVER_OPTIONS
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, name="http", daemon=True).start()
    print(f"Parity is serving on http://{host}:{port}/ (the engine is starting; ~30 s)")


def _run_worker(settings: object) -> int:
    from celery.beat import EmbeddedService

    from config.celery import app

    # Beat on a thread of this process (the rollups and invoice closing), its tasks served
    # by the same worker from the default queue: no second process, no external broker.
    beat = EmbeddedService(app, thread=True)
    beat.start()
    worker = app.Worker(
        queues=[settings.PARITY_ENGINE_QUEUE, settings.CELERY_TASK_DEFAULT_QUEUE],  # type: ignore[attr-defined]
        pool="threads",
        concurrency=settings.PARITY_WORKER_THREADS,  # type: ignore[attr-defined]
        hostname="embedded@%h",
        loglevel="INFO",
    )
    try:
        worker.start()  # returns after a warm shutdown (Ctrl-C or SIGTERM)
    finally:
        beat.stop()
    return int(worker.exitcode or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

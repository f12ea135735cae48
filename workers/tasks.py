"""Celery tasks and worker hooks of the engine pool.

The task is thin: it hands the request to this process's engine host and waits. The
engine is started once per worker process in `worker_init` (the threads pool sends no
`worker_process_init`), and stopped in `worker_shutdown`, after Celery's warm shutdown
has let the running requests finish; without that hook the worker never exits, because
its main thread waits on the engine's non-daemon child process.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import shared_task
from celery.signals import worker_init, worker_shutdown

from wire.protocol import GenerationRequest
from workers import runtime

logger = logging.getLogger(__name__)


@shared_task(name="workers.generate", acks_late=True, reject_on_worker_lost=True)
def generate(payload: dict[str, Any]) -> str:
    host = runtime.current_host()
    if host is None:
        raise RuntimeError("this worker hosts no engine: start it with -Q gpu (see README)")
    return host.run(GenerationRequest.from_dict(payload))


@worker_init.connect
def start_engine(sender: Any, **_: Any) -> None:
    from django.conf import settings

    queues = set(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    if settings.PARITY_ENGINE_QUEUE not in queues:
        return
    try:
        host = build_host()
        host.start()
    except BaseException:
        # Celery would log a failing signal handler and go on serving with no engine,
        # failing every request; a worker without its engine must not look alive.
        logger.critical("the engine failed to start; this worker exits", exc_info=True)
        logging.shutdown()
        os._exit(3)
    runtime.set_host(host)


def build_host() -> Any:
    import django
    from django.apps import apps
    from django.conf import settings

    if not apps.ready:
        django.setup()
    from usage.sink import DatabaseUsageStore, UsageSink
    from workers.engine_host import EngineHost
    from workers.tenant_directory import DatabaseTenantDirectory

    # A weight change must reach the scheduler within a second: poll four times as often.
    directory = DatabaseTenantDirectory(poll_interval_s=0.25)
    directory.start()
    return EngineHost(
        runtime.engine_settings(),
        channels=runtime.channels(),
        gate=runtime.gate(),
        sink=UsageSink(
            DatabaseUsageStore(),
            log_dir=settings.PARITY_USAGE_LOG_DIR,
            max_backlog_bytes=settings.PARITY_USAGE_BACKLOG_MB * 1024 * 1024,
        ),
        directory=directory,
    )


@worker_shutdown.connect
def stop_engine(**_: Any) -> None:
    host = runtime.current_host()
    if host is None:
        return
    runtime.set_host(None)
    logger.info("stopping the engine after %d running requests", host.num_running)
    host.shutdown()
    host.directory.stop()

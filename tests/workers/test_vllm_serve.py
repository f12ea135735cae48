"""The fair scheduler on its own: vLLM's OpenAI server started as the README says."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from bench.targets import VllmServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_python_m_workers_vllm_serve_runs_vllms_server_with_the_fair_scheduler(
    tiny_model_dir: Path,
) -> None:
    with VllmServer(tiny_model_dir, free_port(), model="tiny", weights="acme=3") as server:
        answers = [
            httpx.post(
                f"{server.url}/v1/completions",
                json={
                    "model": "tiny",
                    "prompt": "hello",
                    "max_tokens": 5,
                    "ignore_eos": True,
                    "vllm_xargs": {"tenant": tenant},
                },
                headers={"Authorization": f"Bearer {server.key}"},
                timeout=120,
                trust_env=False,
            )
            for tenant in ("acme", "globex")
        ]
        log = server.log_path.read_text(errors="replace")

    assert [answer.status_code for answer in answers] == [200, 200]
    assert [answer.json()["usage"]["completion_tokens"] for answer in answers] == [5, 5]
    assert "Using custom scheduler class workers.vllm_scheduler.FairScheduler" in log
    assert "Traceback" not in log

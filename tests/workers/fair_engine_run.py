"""Run a real vLLM engine on the CPU with `FairScheduler` inside, for two tenants.

A script, not a test: the engine spawns its engine-core process, so it must run under
`if __name__ == "__main__":`. `python tests/workers/fair_engine_run.py MODEL_DIR` prints
one JSON object: the outputs and the usage records the scheduler sent over the control
line from the engine-core process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

REQUESTS = {"acme": (4, 16), "globex": (4, 8)}  # tenant: (number of requests, max_tokens)


def run(model_dir: str) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    from workers.control import ControlServer

    usage: list[dict[str, Any]] = []
    arrived = threading.Event()

    def on_message(kind: str, body: dict[str, Any]) -> None:
        if kind == "usage":
            usage.append(body)
            if len(usage) == sum(n for n, _ in REQUESTS.values()) + 1:
                arrived.set()

    directory = tempfile.mkdtemp(prefix="parity-ctl-", dir="/tmp")
    server = ControlServer(os.path.join(directory, "control.sock"), on_message)
    server.export_env()  # before the engine spawns its core: the child inherits it
    llm = LLM(
        model=model_dir,
        dtype="float32",
        max_model_len=512,
        kv_cache_memory_bytes=64 * 1024 * 1024,
        enforce_eager=True,
        scheduler_cls="workers.vllm_scheduler.FairScheduler",
        seed=0,
    )
    prompts, params = [], []
    for tenant, (count, max_tokens) in REQUESTS.items():
        for i in range(count):
            prompts.append(f"Request {i} of {tenant}")
            params.append(
                SamplingParams(
                    max_tokens=max_tokens, ignore_eos=True, extra_args={"tenant": tenant}
                )
            )
    outputs = llm.generate(prompts, params, use_tqdm=False)
    chat = llm.chat(
        [{"role": "user", "content": "Hi"}],
        SamplingParams(max_tokens=4, ignore_eos=True, extra_args={"tenant": "initech"}),
        use_tqdm=False,
    )
    arrived.wait(timeout=30)
    time.sleep(0.2)
    llm.llm_engine.engine_core.shutdown()
    server.close()
    os.rmdir(directory)
    return {
        "outputs": [
            {"tenant": p.extra_args["tenant"], "num_tokens": len(o.outputs[0].token_ids)}
            for o, p in zip(outputs, params, strict=True)
        ],
        "chat_prompt_tokens": len(chat[0].prompt_token_ids),
        "usage": usage,
    }


if __name__ == "__main__":
    print("PARITY-RESULT " + json.dumps(run(sys.argv[1])))

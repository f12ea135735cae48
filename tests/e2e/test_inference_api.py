"""The OpenAI-compatible API against a live server and a real engine worker."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.clients import chat_body
from tests.e2e.usage_checks import wait_for_rows
from tests.stack import tenant_with_key
from usage.models import QuarantinedUsage, UsageRecord
from wire.redis_gate import RedisGate
from workers import runtime

pytestmark = pytest.mark.slow


def client_for(served: Any, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=secret, max_retries=0)


def test_the_openai_client_streams_a_chat_completion_with_its_usage(
    served: Any, light: Any
) -> None:
    client = client_for(served, light[1].secret)

    stream = client.chat.completions.create(
        model="parity-tiny",
        messages=[{"role": "user", "content": "Say something."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},  # a random model may say nothing at all
    )
    chunks = list(stream)

    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert usage.completion_tokens == 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 1
    (row,) = wait_for_rows([chunks[0].id])
    assert (row.prompt_tokens, row.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert row.tenant == light[0] and row.model == "parity-tiny" and row.status == "finished"
    assert row.kv_block_seconds > 0 and row.peak_blocks >= 1 and row.ttft_ms is not None


def test_a_completion_without_streaming_is_one_body_with_usage(served: Any, light: Any) -> None:
    client = client_for(served, light[1].secret)

    completion = client.completions.create(
        model="parity-tiny", prompt="Once upon", max_tokens=8, extra_body={"ignore_eos": True}
    )

    assert completion.object == "text_completion"
    assert completion.usage is not None and completion.usage.completion_tokens == 8
    extra = completion.usage.model_extra or {}
    assert extra["kv_gib_seconds"] > 0
    (row,) = wait_for_rows([completion.id])
    assert row.output_tokens == completion.usage.completion_tokens


def test_models_lists_the_served_model(served: Any, light: Any) -> None:
    models = client_for(served, light[1].secret).models.list()

    assert [model.id for model in models.data] == ["parity-tiny"]


def test_an_unknown_model_is_a_400_naming_the_field(served: Any, light: Any) -> None:
    client = client_for(served, light[1].secret)

    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )

    assert error.value.status_code == 400
    assert error.value.body["param"] == "model"  # type: ignore[index]


def test_a_prompt_longer_than_the_context_is_a_400_naming_the_field(
    served: Any, light: Any
) -> None:
    response = httpx.post(
        f"{served.url}/v1/chat/completions",
        json=chat_body("x" * 32800, 8),
        headers={"Authorization": f"Bearer {light[1].secret}"},
        timeout=60,
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("messages", "context_length_exceeded")


def test_the_worker_gives_the_seat_back_once_its_engine_is_done(served: Any, light: Any) -> None:
    gate = runtime.gate()
    assert isinstance(gate, RedisGate)
    response = httpx.post(
        f"{served.url}/v1/chat/completions",
        json=chat_body("hello", 4),
        headers={"Authorization": f"Bearer {light[1].secret}"},
        timeout=60,
    )
    assert response.status_code == 200
    request_id = response.json()["id"]

    # Given back by the worker (`Gate.release`), not only by the gateway at the end.
    deadline = time.monotonic() + 30
    while gate.redis.zscore(gate.prefix + "released", request_id) is None:
        assert time.monotonic() < deadline, f"the worker never gave back the seat of {request_id}"
        time.sleep(0.05)
    assert gate.state().num_seated == 0


def test_a_tenant_over_its_concurrency_limit_gets_429_with_retry_after(
    served: Any, plan: Any
) -> None:
    tenant, key = tenant_with_key("capped", plan)
    tenant.max_concurrent_requests = 1
    tenant.save()
    headers = {"Authorization": f"Bearer {key.secret}"}
    accepted, enough = threading.Event(), threading.Event()

    def hold_a_slot() -> None:
        # A generation far longer than the test, read all along, until we hang up.
        body = chat_body("long", 30000, stream=True, ignore_eos=True)
        url = f"{served.url}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as first:
            for _line in first.iter_lines():
                accepted.set()
                if enough.is_set():
                    break

    holder = threading.Thread(target=hold_a_slot)
    holder.start()
    assert accepted.wait(60)
    second = httpx.post(
        f"{served.url}/v1/chat/completions", json=chat_body("again", 4), headers=headers, timeout=60
    )
    enough.set()
    holder.join()

    assert second.status_code == 429
    assert second.headers["Retry-After"] == "1"
    assert second.json()["error"]["code"] == "too_many_requests"


def test_a_client_that_hangs_up_mid_stream_aborts_its_request_and_is_billed_once(
    served: Any, light: Any
) -> None:
    request_id = ""
    num_content_chunks = 0
    # Long enough (~15 s) that the engine is still at it when the hang-up reaches it, even
    # when relaying tokens lags behind generating them on a loaded machine.
    body = chat_body("tell a long story", 30000, stream=True, ignore_eos=True)
    with httpx.stream(
        "POST",
        f"{served.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {light[1].secret}"},
        timeout=60,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                request_id = request_id or line.split('"id":"', 1)[1].split('"', 1)[0]
                num_content_chunks += '"content":"' in line and '"content":""' not in line
            if num_content_chunks >= 2:
                break  # hang up: leaving the block closes the connection
    hung_up_at = time.time()
    while not runtime.channels().abort_requested(request_id) and time.time() < hung_up_at + 30:
        time.sleep(0.01)
    noticed_after = time.time() - hung_up_at
    assert noticed_after < 30, f"the gateway did not ask to abort {request_id}"

    rows = wait_for_rows([request_id])
    quarantined = list(QuarantinedUsage.objects.filter(request_id=request_id).values("error"))
    assert len(rows) == 1, f"usage of {request_id}: no row; quarantined: {quarantined}"
    (row,) = rows
    ended_after = row.finished_at.timestamp() - hung_up_at
    print(f"\nhang-up noticed after {noticed_after:.3f} s; request ended after {ended_after:.3f} s")
    assert row.status == "aborted"
    assert 2 <= row.output_tokens < 30000
    assert UsageRecord.objects.filter(request_id=request_id).count() == 1

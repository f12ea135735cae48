"""Turning a request into prompt tokens, with the checks only the tokenizer can make.

The worker tokenizes (not the API): only it has the model's tokenizer and chat template.
A prompt that cannot fit the model's context comes back to the client as a 400 naming
the field, before the engine sees it.
"""

from __future__ import annotations

import queue
from typing import Any

from wire.protocol import GenerationRequest, RequestKind


class PromptError(ValueError):
    """A request the model cannot take; `param` names the request field at fault."""

    def __init__(self, message: str, *, code: str, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class Tokenizer:
    """The served model's tokenizer, safe to call from many threads at once.

    HF fast tokenizers are not re-entrant, and one lock around one of them was a FIFO
    queue in front of the fair scheduler. So there are `num_copies` of it: a request waits
    only while every copy is busy, for a few microseconds per prompt (the gateway has
    already refused prompts too long to fit by their size).
    """

    def __init__(self, model_path: str, max_model_len: int, num_copies: int = 4) -> None:
        from transformers import AutoTokenizer

        self.max_model_len = max_model_len
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(num_copies):
            self._free.put(AutoTokenizer.from_pretrained(model_path))

    def encode(self, request: GenerationRequest) -> list[int]:
        tokenizer = self._free.get()
        try:
            ids = self._encode(tokenizer, request)
        finally:
            self._free.put(tokenizer)
        if not ids:
            raise PromptError("The prompt is empty.", code="invalid_prompt", param=_field(request))
        if len(ids) + (request.max_tokens or 1) > self.max_model_len:
            raise PromptError(
                f"This model's maximum context length is {self.max_model_len} tokens; the "
                f"prompt has {len(ids)} and max_tokens asks for {request.max_tokens or 1}. "
                "Shorten the prompt or lower max_tokens.",
                code="context_length_exceeded",
                param=_field(request),
            )
        return ids

    @staticmethod
    def _encode(tokenizer: Any, request: GenerationRequest) -> list[int]:
        if request.kind is RequestKind.CHAT:
            text = tokenizer.apply_chat_template(
                request.messages, add_generation_prompt=True, tokenize=False
            )
            return list(tokenizer.encode(text, add_special_tokens=False))
        return list(tokenizer.encode(request.prompt or ""))


def _field(request: GenerationRequest) -> str:
    return "messages" if request.kind is RequestKind.CHAT else "prompt"

"""Turning a request into prompt tokens, with the checks only the tokenizer can make.

The worker tokenizes (not the API): only it has the model's tokenizer and chat template.
A prompt that cannot fit the model's context comes back to the client as a 400 naming
the field, before the engine sees it.
"""

from __future__ import annotations

import threading
from typing import Any

from workers.protocol import GenerationRequest, RequestKind


class PromptError(ValueError):
    """A request the model cannot take; `param` names the request field at fault."""

    def __init__(self, message: str, *, code: str, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class Tokenizer:
    """The served model's tokenizer, loaded once; safe to call from many threads."""

    def __init__(self, model_path: str, max_model_len: int) -> None:
        from transformers import AutoTokenizer

        self._tokenizer: Any = AutoTokenizer.from_pretrained(model_path)
        self.max_model_len = max_model_len
        self._lock = threading.Lock()  # HF fast tokenizers are not re-entrant

    def encode(self, request: GenerationRequest) -> list[int]:
        with self._lock:
            ids = self._encode(request)
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

    def _encode(self, request: GenerationRequest) -> list[int]:
        if request.kind is RequestKind.CHAT:
            text = self._tokenizer.apply_chat_template(
                request.messages, add_generation_prompt=True, tokenize=False
            )
            return list(self._tokenizer.encode(text, add_special_tokens=False))
        return list(self._tokenizer.encode(request.prompt or ""))


def _field(request: GenerationRequest) -> str:
    return "messages" if request.kind is RequestKind.CHAT else "prompt"

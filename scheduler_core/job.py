"""The unit of scheduling: one inference request of one tenant.

A `Job` is immutable: what the client asked for. Progress (tokens computed,
blocks held) belongs to whoever runs it: the simulator or the engine adapter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Job:
    """One request.

    `max_tokens` is the output cap a client asked for; engines that reserve
    KV memory up front reserve for it. `output_tokens` is the true output
    length, known only to simulators and oracle predictors; `None` means
    "runs to `max_tokens`". `app` groups the calls of a multi-call application.
    """

    request_id: str
    tenant: str
    arrival_s: float
    prompt_tokens: int
    max_tokens: int
    output_tokens: int | None = None
    app: str | None = None

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("request_id must be a non-empty string")
        if not self.tenant:
            raise ValueError(f"request {self.request_id}: tenant must be a non-empty string")
        if self.arrival_s < 0:
            raise ValueError(f"request {self.request_id}: arrival_s must be >= 0")
        if self.prompt_tokens < 1:
            raise ValueError(f"request {self.request_id}: prompt_tokens must be >= 1")
        if self.max_tokens < 1:
            raise ValueError(f"request {self.request_id}: max_tokens must be >= 1")
        if self.output_tokens is not None and not 1 <= self.output_tokens <= self.max_tokens:
            raise ValueError(f"request {self.request_id}: output_tokens must be in [1, max_tokens]")

    @property
    def target_output_tokens(self) -> int:
        """How many tokens the request will produce when run to completion."""
        return self.max_tokens if self.output_tokens is None else self.output_tokens

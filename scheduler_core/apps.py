"""LLM applications: a DAG of calls that a user waits on as a whole.

A map-reduce summary, a self-consistency vote or an agent loop is one
*application*: several LLM calls, some ready at once, some only after their
parents finish (plus a think or tool delay). Justitia schedules these, not
single requests. An `Application` is what a simulator knows (true lengths
included); an `AppInfo` is what a scheduler may know when the application
arrives.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from scheduler_core.costs import MemoryCost
from scheduler_core.job import Job

_MEMORY = MemoryCost()


class AppType(enum.StrEnum):
    """What kind of application: the predictor's strongest hint."""

    CHAT = "chat"
    SELF_CONSISTENCY = "self_consistency"
    MAP_REDUCE = "map_reduce"
    AGENT = "agent"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One LLM call of an application.

    It becomes ready `delay_s` after the last of its `parents` (indices of
    earlier calls) finishes; a call without parents is ready at arrival.
    """

    index: int
    prompt_tokens: int
    output_tokens: int
    max_tokens: int
    parents: tuple[int, ...] = ()
    delay_s: float = 0.0

    @property
    def memory_cost(self) -> float:
        """KV token-steps: `p*d + d^2/2`."""
        return _MEMORY.total(self.prompt_tokens, self.output_tokens)


@dataclass(frozen=True, slots=True)
class AppInfo:
    """What is known about an application when it arrives.

    `prompt_tokens` and `max_tokens` sum over the calls ready at arrival,
    whose number is `fan_out`. `num_calls` is the total number of calls when
    the client declares it (None inside vLLM, where calls just keep coming).
    `true_cost` is for oracle predictors in experiments only.
    """

    app_id: str
    tenant: str
    arrival_s: float
    app_type: AppType = AppType.UNKNOWN
    prompt_tokens: int = 1
    fan_out: int = 1
    max_tokens: int = 1
    num_calls: int | None = None
    true_cost: float | None = None


@dataclass(frozen=True, slots=True)
class Application:
    app_id: str
    tenant: str
    arrival_s: float
    app_type: AppType
    calls: tuple[CallSpec, ...]

    def __post_init__(self) -> None:
        if not self.calls:
            raise ValueError(f"application {self.app_id}: needs at least one call")
        for position, call in enumerate(self.calls):
            if call.index != position:
                raise ValueError(
                    f"application {self.app_id}: call {position} has index {call.index}"
                )
            if any(not 0 <= parent < position for parent in call.parents):
                raise ValueError(
                    f"application {self.app_id}: call {position}'s parents must be earlier calls"
                )
            if call.delay_s < 0:
                raise ValueError(f"application {self.app_id}: call {position} has delay_s < 0")
            if not 1 <= call.output_tokens <= call.max_tokens or call.prompt_tokens < 1:
                raise ValueError(f"application {self.app_id}: call {position} has bad lengths")

    @property
    def roots(self) -> tuple[CallSpec, ...]:
        return tuple(call for call in self.calls if not call.parents)

    @property
    def true_cost(self) -> float:
        """The application's memory-centric cost: the sum over its calls."""
        return sum(call.memory_cost for call in self.calls)

    @property
    def depth(self) -> int:
        """Calls on the longest dependency chain (1 for chat, 2 for map-reduce)."""
        depths: list[int] = []
        for call in self.calls:
            depths.append(1 + max((depths[parent] for parent in call.parents), default=0))
        return max(depths)

    def info(self, *, with_truth: bool = True) -> AppInfo:
        roots = self.roots
        return AppInfo(
            app_id=self.app_id,
            tenant=self.tenant,
            arrival_s=self.arrival_s,
            app_type=self.app_type,
            prompt_tokens=sum(call.prompt_tokens for call in roots),
            fan_out=len(roots),
            max_tokens=sum(call.max_tokens for call in roots),
            num_calls=len(self.calls),
            true_cost=self.true_cost if with_truth else None,
        )

    def jobs(self) -> list[Job]:
        """Every call as a request arriving with the application (to validate sizes)."""
        return [self.job(call, self.arrival_s) for call in self.calls]

    def job(self, call: CallSpec, ready_s: float) -> Job:
        """The request a call becomes once it is ready."""
        return Job(
            request_id=call_id(self.app_id, call.index),
            tenant=self.tenant,
            arrival_s=ready_s,
            prompt_tokens=call.prompt_tokens,
            max_tokens=call.max_tokens,
            output_tokens=call.output_tokens,
            app=self.app_id,
        )


def call_id(app_id: str, index: int) -> str:
    return f"{app_id}/{index}"

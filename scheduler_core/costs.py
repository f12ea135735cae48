"""Cost functions: how much service a request has received so far.

A cost function maps the tokens a request has processed, `(p, q)` = prompt
tokens computed and output tokens produced, to a cumulative cost. Policies
charge the difference between two calls, so any cost, linear or not, is
charged incrementally and exactly once per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class CostFunction(Protocol):
    """Cumulative cost of a request that has processed `p` input and `q` output tokens."""

    @property
    def name(self) -> str: ...

    def total(self, input_tokens: int, output_tokens: int) -> float: ...


@dataclass(frozen=True, slots=True)
class LinearCost:
    """`w_in * p + w_out * q`: the VTC paper's default (w_in = 1, w_out = 2)."""

    w_in: float = 1.0
    w_out: float = 2.0

    def __post_init__(self) -> None:
        if self.w_in < 0 or self.w_out < 0:
            raise ValueError("cost weights must be >= 0")

    @property
    def name(self) -> str:
        return "linear"

    def total(self, input_tokens: int, output_tokens: int) -> float:
        return self.w_in * input_tokens + self.w_out * output_tokens


@dataclass(frozen=True, slots=True)
class ProfiledCost:
    """The paper's profiled cost `h(p, q) = 2.1p + q + 0.04pq + 0.032q^2 + 11.46` (§5.5).

    The constant is charged with the first token, so an untouched request costs 0.
    """

    a_in: float = 2.1
    a_out: float = 1.0
    a_cross: float = 0.04
    a_out_sq: float = 0.032
    constant: float = 11.46

    @property
    def name(self) -> str:
        return "profiled"

    def total(self, input_tokens: int, output_tokens: int) -> float:
        p, q = input_tokens, output_tokens
        if p == 0 and q == 0:
            return 0.0
        return (
            self.a_in * p
            + self.a_out * q
            + self.a_cross * p * q
            + self.a_out_sq * q * q
            + self.constant
        )


@dataclass(frozen=True, slots=True)
class MemoryCost:
    """KV token-time: producing output token i keeps `p + i` tokens resident.

    A request with p prompt and d output tokens totals `p*d + d*d/2` token-steps,
    the memory-centric cost Justitia-style schedulers use.
    """

    @property
    def name(self) -> str:
        return "memory"

    def total(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens * output_tokens + output_tokens * output_tokens / 2


def make_cost(name: str) -> CostFunction:
    """Build a cost function by name: `linear`, `profiled` or `memory`."""
    costs: dict[str, CostFunction] = {
        "linear": LinearCost(),
        "profiled": ProfiledCost(),
        "memory": MemoryCost(),
    }
    if name not in costs:
        raise ValueError(f"unknown cost function {name!r}; choose from {', '.join(costs)}")
    return costs[name]

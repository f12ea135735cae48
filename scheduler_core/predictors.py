"""Output-length predictors for VTC with length prediction (paper §4.4, §5.4)."""

from __future__ import annotations

import random
from collections import deque
from typing import Protocol

from scheduler_core.job import Job


class LengthPredictor(Protocol):
    def predict(self, job: Job) -> int:
        """Predicted output tokens of `job`, in [1, job.max_tokens]."""
        ...

    def observe(self, job: Job, output_tokens: int) -> None:
        """Learn from a finished request."""
        ...


class MovingAveragePredictor:
    """The mean output length of the tenant's last `window` finished requests.

    Assumption (the paper calls its predictor "practical" without a window
    we could confirm): window 5; before any history, predict `default_tokens`,
    or the request's `max_tokens` when unset, which over-bills and is refunded.
    """

    def __init__(self, window: int = 5, default_tokens: int | None = None) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.default_tokens = default_tokens
        self._recent: dict[str, deque[int]] = {}

    def predict(self, job: Job) -> int:
        recent = self._recent.get(job.tenant)
        if recent:
            guess = round(sum(recent) / len(recent))
        elif self.default_tokens is not None:
            guess = self.default_tokens
        else:
            guess = job.max_tokens
        return min(max(guess, 1), job.max_tokens)

    def observe(self, job: Job, output_tokens: int) -> None:
        recent = self._recent.setdefault(job.tenant, deque(maxlen=self.window))
        recent.append(output_tokens)


class OraclePredictor:
    """The true output length, optionally with uniform relative noise ±`noise`.

    For experiments only: it reads `job.output_tokens`. Seeded, so runs repeat.
    """

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        if not 0 <= noise < 1:
            raise ValueError(f"noise must be in [0, 1), got {noise}")
        self.noise = noise
        self._rng = random.Random(seed)

    def predict(self, job: Job) -> int:
        truth = job.target_output_tokens
        if self.noise == 0:
            return truth
        factor = self._rng.uniform(1 - self.noise, 1 + self.noise)
        return min(max(round(truth * factor), 1), job.max_tokens)

    def observe(self, job: Job, output_tokens: int) -> None:
        return None

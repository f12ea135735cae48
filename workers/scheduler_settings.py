"""The fair scheduler's settings, read from the environment once, strictly.

- `PARITY_POLICY`: any `scheduler_core.registry` name (default `vtc`).
- `PARITY_WEIGHTS`: `tenant=weight` pairs separated by commas, e.g. `acme=1,globex=3`.
- `PARITY_WEIGHTS_FILE`: a JSON object `{tenant: weight}`, re-read when it changes.

A bad value raises ValueError naming the variable. No Django and no vLLM here: the
scheduler runs in vLLM's engine-core process, which has no Parity configuration.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scheduler_core.registry import make_policy

logger = logging.getLogger(__name__)

POLICY_ENV = "PARITY_POLICY"
WEIGHTS_ENV = "PARITY_WEIGHTS"
WEIGHTS_FILE_ENV = "PARITY_WEIGHTS_FILE"
DEFAULT_POLICY = "vtc"

Weights = dict[str, float]


STATE_INTERVAL_ENV = "PARITY_STATE_INTERVAL_S"


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """What the environment asked for; weights not named anywhere are 1."""

    policy_name: str = DEFAULT_POLICY
    weights: Weights = field(default_factory=dict)
    weights_file: Path | None = None
    state_interval_s: float = 1.0  # how often live state goes to the worker

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SchedulerSettings:
        env = os.environ if environ is None else environ
        policy_name = env.get(POLICY_ENV, "").strip() or DEFAULT_POLICY
        try:
            make_policy(policy_name)
        except ValueError as error:
            raise ValueError(f"{POLICY_ENV}: {error}") from error
        weights = parse_weights(env.get(WEIGHTS_ENV, ""), source=WEIGHTS_ENV)
        file_value = env.get(WEIGHTS_FILE_ENV, "").strip()
        weights_file = Path(file_value) if file_value else None
        if weights_file is not None:
            read_weights_file(weights_file)  # fail at start, not at the first reload
        interval = _state_interval(env.get(STATE_INTERVAL_ENV, "").strip())
        return cls(policy_name, weights, weights_file, interval)


def _state_interval(value: str) -> float:
    if not value:
        return 1.0
    try:
        interval = float(value)
    except ValueError:
        interval = -1.0
    if not 0.05 <= interval <= 60:
        raise ValueError(f"{STATE_INTERVAL_ENV}: must be seconds in [0.05, 60], got {value!r}")
    return interval


def check_weight(tenant: str, weight: object, *, source: str) -> float:
    """`weight` as a finite float > 0; ValueError naming `source` otherwise."""
    if not tenant:
        raise ValueError(f"{source}: tenant names must be non-empty")
    if isinstance(weight, bool) or not isinstance(weight, int | float | str):
        raise ValueError(f"{source}: weight of tenant {tenant!r} must be a number")
    try:
        value = float(weight)
    except ValueError:
        message = f"{source}: weight of tenant {tenant!r} is not a number: {weight!r}"
        raise ValueError(message) from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{source}: weight of tenant {tenant!r} must be > 0, got {weight!r}")
    return value


def parse_weights(text: str, *, source: str = WEIGHTS_ENV) -> Weights:
    """`acme=1,globex=3` -> {"acme": 1.0, "globex": 3.0}; empty text -> {}."""
    weights: Weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        tenant, sep, value = (piece.strip() for piece in item.partition("="))
        if not sep:
            raise ValueError(f"{source}: expected tenant=weight, got {item!r}")
        if tenant in weights:
            raise ValueError(f"{source}: tenant {tenant!r} is listed twice")
        weights[tenant] = check_weight(tenant, value, source=source)
    return weights


def read_weights_file(path: Path) -> Weights:
    """The `{tenant: weight}` JSON object in `path`; ValueError if unreadable or malformed."""
    source = f"{WEIGHTS_FILE_ENV} ({path})"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{source}: cannot read: {error.strerror or error}") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object {{tenant: weight}}")
    return {tenant: check_weight(tenant, weight, source=source) for tenant, weight in data.items()}


class WeightsFileWatcher:
    """Re-reads the weights file when its mtime changes, looking at most once a second.

    `poll(now)` returns the new table when the file changed, else None. A file that
    became unreadable or malformed while the engine runs is logged and skipped (the
    weights in force stay), because a typo must not take the engine down.
    """

    check_interval_s = 1.0

    def __init__(self, path: Path, *, mtime: Callable[[Path], float] | None = None) -> None:
        self.path = path
        self._mtime = mtime or (lambda p: p.stat().st_mtime)
        self._seen_mtime: float | None = None
        self._checked_s: float | None = None

    def poll(self, now: float) -> Weights | None:
        if self._checked_s is not None and now - self._checked_s < self.check_interval_s:
            return None
        self._checked_s = now
        try:
            mtime = self._mtime(self.path)
        except OSError as error:
            logger.error("%s: cannot stat %s: %s", WEIGHTS_FILE_ENV, self.path, error)
            return None
        if mtime == self._seen_mtime:
            return None
        self._seen_mtime = mtime
        try:
            return read_weights_file(self.path)
        except ValueError as error:
            logger.error("%s; keeping the weights in force", error)
            return None

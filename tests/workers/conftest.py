"""Shared fixtures of the worker tests: the tiny model, built once, and a clean environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.control import ADDRESS_ENV, AUTHKEY_ENV
from workers.scheduler_settings import POLICY_ENV, WEIGHTS_ENV, WEIGHTS_FILE_ENV
from workers.tiny_model import ensure_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(autouse=True)
def _no_parity_scheduler_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fair scheduler reads these at start; a developer's shell must not leak in.
    for name in (POLICY_ENV, WEIGHTS_ENV, WEIGHTS_FILE_ENV, ADDRESS_ENV, AUTHKEY_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

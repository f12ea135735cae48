"""Settings come from the environment; a malformed value stops start-up naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def start(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, "SECRET_KEY": "x", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://root@localhost/db"),
        ("DATABASE_URL", "postgres://u@h:notaport/db"),
        ("DATABASE_URL", "postgres://u@h:5432"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("CELERY_BROKER_URL", "kafka://broker"),
        ("ALLOWED_HOSTS", "a,,b"),
    ],
)
def test_a_malformed_variable_stops_start_up_naming_it(name, value):
    result = start(**{name: value})
    assert result.returncode == 2
    assert result.stderr.startswith(f"configuration error: {name}=")
    assert "Traceback" not in result.stderr


def test_secret_key_is_required_when_debug_is_off():
    result = start(SECRET_KEY="", DEBUG="false")
    assert result.returncode == 2
    assert "SECRET_KEY must be set" in result.stderr


def test_debug_mode_starts_on_embedded_defaults(tmp_path):
    result = start(SECRET_KEY="", DEBUG="true", REDIS_URL="", CELERY_BROKER_URL="")
    assert result.returncode == 0, result.stderr

"""Strict reading of settings from the environment.

A malformed value must stop start-up with a message naming the variable: a typo in
DATABASE_URL that silently fell back to SQLite would lose a tenant's usage. django-environ
parses the URLs; these helpers add the validation it leaves out.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_DB_SCHEMES = frozenset({"sqlite", "postgres", "postgresql", "pgsql"})


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use one of true/false/1/0.")


def env_str(name: str, default: str | None = None) -> str | None:
    value = _raw(name)
    return default if value is None else value


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} must be an integer >= {minimum}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise ImproperlyConfigured(f"{name}={value!r} has an empty item: use a,b,c.")
    return items


def env_url(name: str, default: str | None, schemes: frozenset[str]) -> str | None:
    """A URL whose scheme is one of `schemes` and whose port, if any, is a number."""
    value = _raw(name)
    if value is None:
        return default
    _check_url(name, value, schemes)
    return value


def env_database(name: str, default: str) -> dict[str, object]:
    value = _raw(name) or default
    _check_url(name, value, _DB_SCHEMES)
    config: dict[str, object] = environ.Env.db_url_config(value)
    if config["ENGINE"] == "django.db.backends.postgresql" and not config["NAME"]:
        raise ImproperlyConfigured(f"{name}={value!r} names no database: add /dbname.")
    return config


def _check_url(name: str, value: str, schemes: frozenset[str]) -> None:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(f"{name}={value!r}: scheme must be one of {allowed}.")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={value!r}: {exc}.") from exc

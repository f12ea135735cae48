"""The suite runs on the real services the product runs on, not on stand-ins."""

import pytest
from django.core.cache import cache
from django.db import connection


@pytest.mark.django_db
def test_the_database_is_postgresql():
    assert connection.vendor == "postgresql"


def test_the_cache_is_a_real_redis(settings):
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
    cache.set("parity:probe", "yes", 5)
    assert cache.get("parity:probe") == "yes"

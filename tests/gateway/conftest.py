"""The gateway's tests reuse the control plane's cast (acme with alice's key, globex with
bob's)."""

from tests.tenants.conftest import (  # noqa: F401
    _clear_cache,
    _fresh_key_cache,
    acme,
    alice_key,
    plan,
)

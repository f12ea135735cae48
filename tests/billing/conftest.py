"""The billing tests reuse the control plane's cast (acme with alice's key, globex with bob's,
a staff user)."""

from tests.tenants.conftest import (  # noqa: F401
    _clear_cache,
    _fast_password_hashing,
    _fresh_key_cache,
    acme,
    alice,
    alice_key,
    anonymous,
    bob,
    bob_key,
    globex,
    outsider,
    plan,
    staff,
    staff_client,
    staff_user,
)

"""The house plan's floors (shared/ARCHITECTURE.md), read from every import statement.

`wire/` is what the gateway and the workers share: it imports neither, nor the accounts,
nor usage or billing, nor any Django model. The gateway and the workers never import each
other; the workers write usage through `usage/`, which imports neither, nor billing.
Billing prices usage; nothing below it imports it. The control plane's surfaces in
`tenants/` (REST views, dashboard) read usage and billing. The few imports that still cross
floors are named here one by one until their code gets a home of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ("config", "tenants", "usage", "billing", "workers", "gateway", "wire", "scheduler_core")

# (importing package, imported package) -> the modules allowed to cross, for now.
CROSSINGS = {
    ("workers", "tenants"): {"workers/tenant_directory.py": {"tenants.models"}},
    ("usage", "tenants"): {
        "usage/store_db.py": {"tenants.models"},  # to tell a deleted tenant from bad rows
        "usage/report.py": {"tenants.models"},  # tenant slugs in the report
    },
}
FORBIDDEN = {
    "wire": {"config", "tenants", "usage", "billing", "workers", "gateway"}
    | {"django.db", "django.contrib"},
    "gateway": {"workers", "billing"},
    "workers": {"gateway", "billing"},
    "usage": {"gateway", "workers", "billing"},
    "billing": {"gateway", "workers", "wire"},
    "tenants": {"gateway", "workers"},
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources(package: str) -> list[Path]:
    return [p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]


def matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_no_package_imports_across_a_forbidden_floor() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package, banned in FORBIDDEN.items()
        for path in sources(package)
        for name in imports_of(path)
        if any(matches(name, prefix) for prefix in banned)
    ]
    assert offenders == []


def test_apps_cross_into_the_accounts_only_through_the_named_ports() -> None:
    offenders = []
    for (importer, imported), allowed in CROSSINGS.items():
        for path in sources(importer):
            relative = str(path.relative_to(ROOT))
            crossing = {n for n in imports_of(path) if matches(n, imported)}
            if crossing - allowed.get(relative, set()):
                offenders.append(f"{relative} imports {sorted(crossing)}")
    assert offenders == []


def test_the_walk_finds_every_app() -> None:
    assert all(len(sources(app)) > 2 for app in APPS)

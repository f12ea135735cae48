"""Seed the demo: a plan, three tenants with weights 1, 2 and 4, a key for each, an admin.

Safe to run again: existing rows are kept; each run issues fresh demo keys (revoking the
previous ones) and a fresh admin password, since neither can be shown twice.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from tenants import services
from tenants.audit import Actor
from tenants.models import ApiKey, Plan, Tenant

DEMO_TENANTS = [
    ("acme", "Acme Corp", Decimal(1)),
    ("globex", "Globex", Decimal(2)),
    ("initech", "Initech", Decimal(4)),
]
DEMO_KEY_NAME = "demo"


class Command(BaseCommand):
    help = "Create the demo tenants, plan, API keys and admin user, printing the credentials."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--admin-username", default="admin")

    @transaction.atomic
    def handle(self, *args: Any, admin_username: str, **options: Any) -> None:
        actor = Actor.system("seed_demo")
        plan = self._plan(actor)
        self.stdout.write(self.style.MIGRATE_HEADING("Demo tenants and API keys (shown once):"))
        for slug, name, weight in DEMO_TENANTS:
            tenant = self._tenant(actor, slug, name, weight, plan)
            for old in ApiKey.objects.usable().filter(tenant=tenant, name=DEMO_KEY_NAME):
                services.revoke_key(actor, old)
            issued = services.issue_key(actor, tenant, DEMO_KEY_NAME)
            self.stdout.write(f"  {slug:<8} weight {tenant.weight.normalize()}  {issued.secret}")
        password = self._admin(admin_username)
        self.stdout.write(self.style.MIGRATE_HEADING("Admin user (new password each run):"))
        self.stdout.write(f"  username {admin_username}  password {password}")

    def _plan(self, actor: Actor) -> Plan:
        plan = Plan.objects.filter(name="Standard").first()
        if plan is not None:
            return plan
        new = Plan(
            name="Standard",
            price_input_per_mtok=Decimal("0.50"),
            price_cached_input_per_mtok=Decimal("0.25"),
            price_output_per_mtok=Decimal("1.50"),
            price_kv_gib_hour=Decimal("0.10"),
        )
        services.create(actor, new)
        return new

    def _tenant(self, actor: Actor, slug: str, name: str, weight: Decimal, plan: Plan) -> Tenant:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is not None:
            return tenant
        new = Tenant(slug=slug, name=name, weight=weight, plan=plan)
        services.create(actor, new)
        return new

    def _admin(self, username: str) -> str:
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return password

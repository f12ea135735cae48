"""`manage.py usage rollup`: roll new usage rows up into the hour/day tables now (Celery beat
does it every 30 s); `usage rebuild`: forget every rollup and build them again from the rows."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from rich.progress import Progress

from usage import rollups
from usage.models import UsageRecord


class Command(BaseCommand):
    help = "Maintain the usage rollup tables (hour and day sums, latency histograms)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["rollup", "rebuild"])
        parser.add_argument(
            "--settle-seconds",
            type=float,
            default=rollups.SETTLE_S,
            help="only rows at least this old (a writer's open transaction may still commit)",
        )

    def handle(self, *args: Any, action: str, settle_seconds: float, **_: Any) -> None:
        if action == "rebuild":
            rollups.rebuild()
            self.stdout.write("Rollups cleared; rolling up every usage row again.")
        total = UsageRecord.objects.count() if action == "rebuild" else None
        with Progress(transient=True) as bar:
            task = bar.add_task("rolling up usage", total=total)
            report = rollups.roll_up_new_usage(
                timezone.now(),
                settle_s=settle_seconds,
                progress=lambda done: bar.advance(task, done),
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"{report.rows} usage row(s) rolled up in {report.passes} pass(es); "
                f"cursor at {report.cursor.isoformat()}."
            )
        )

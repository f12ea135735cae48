"""Periodic jobs, scheduled by Celery beat (`CELERY_BEAT_SCHEDULE` in the settings)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from billing import invoices as billing
from usage import rollups

logger = logging.getLogger(__name__)


@shared_task(name="tenants.roll_up_usage", ignore_result=True)
def roll_up_usage() -> int:
    """Roll new usage rows up into the hour/day tables; returns how many were rolled up."""
    report = rollups.roll_up_new_usage(timezone.now())
    if report.rows:
        logger.info("rolled up %d usage rows in %d pass(es)", report.rows, report.passes)
    return report.rows


@shared_task(name="tenants.close_invoices", ignore_result=True)
def close_invoices() -> int:
    """Finalise last month's invoices (scheduled early on the 1st, UTC)."""
    now = timezone.now()
    report = billing.close(billing.previous_month(now), now)
    for reason in report.skipped:
        logger.warning("not billed: %s", reason)
    logger.info("finalised %d invoices", len(report.invoices))
    return len(report.invoices)

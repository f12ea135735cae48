"""The staff UI's forms: what a person can type, checked before it reaches a service or an API."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.http import QueryDict
from django.utils import timezone

from billing.models import InvoiceStatus
from scheduler_core.registry import POLICY_NAMES
from scheduler_core.sim.profiles import PROFILES
from tenants.models import MAX_WEIGHT, Tenant
from tenants.whatif import DEFAULT_POLICY, DEFAULT_PROFILE
from usage.report import WIDTHS

GROUP_BY_CHOICES = [
    ("tenant", "Tenant"),
    ("api_key", "API key"),
    ("model", "Model"),
    ("app", "App"),
]
# Past this a chart is unreadable, and the browser would fetch page after page of the API.
MAX_BUCKETS = 2880
MAX_PAGES = 12
DATETIME_INPUT = "%Y-%m-%dT%H:%M"


class DateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format=DATETIME_INPUT, **kwargs)


class WeightForm(forms.Form):
    weight = forms.DecimalField(
        max_digits=11,
        decimal_places=4,
        max_value=MAX_WEIGHT,
        widget=forms.NumberInput(attrs={"step": "any", "min": "0.0001"}),
        help_text="Relative fair share: greater than 0, at most 1,000,000.",
    )

    def clean_weight(self) -> Decimal:
        weight: Decimal = self.cleaned_data["weight"]
        if weight <= 0:
            raise forms.ValidationError("The weight must be greater than 0.")
        return weight


class KeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the key is for, e.g. 'production'.")


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _default_range(hours: int) -> tuple[datetime, datetime]:
    end = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    return end - timedelta(hours=hours), end


class RangeForm(forms.Form):
    """A time range, end after start; both start out as the last `default_hours`."""

    default_hours = 24

    start = forms.DateTimeField(label="From (UTC)", widget=DateTimeInput())
    end = forms.DateTimeField(label="To (UTC)", widget=DateTimeInput())

    def __init__(self, data: Any = None, **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        start, end = _default_range(self.default_hours)
        self.fields["start"].initial = start
        self.fields["end"].initial = end

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end and end <= start:
            self.add_error("end", "The end must be after the start.")
        return cleaned


class UsageQueryForm(RangeForm):
    """The usage API's filters; `api_query()` is the query string both the chart and the
    CSV export use, so the download is exactly what the page shows."""

    bucket_width = forms.ChoiceField(choices=[(w, w) for w in WIDTHS], initial="1h", label="Bucket")
    group_by = forms.MultipleChoiceField(
        choices=GROUP_BY_CHOICES,
        required=False,
        initial=["tenant"],
        widget=forms.CheckboxSelectMultiple,
        label="Group by",
    )
    tenants = forms.ModelMultipleChoiceField(
        queryset=Tenant.objects.all(),
        to_field_name="slug",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: all tenants.",
    )
    models = forms.CharField(
        required=False, max_length=500, help_text="Comma-separated model names; empty: all."
    )

    @classmethod
    def from_query(cls, query: QueryDict) -> UsageQueryForm:
        """Always bound: a first visit (no query) shows the default range's chart at once."""
        data = query.copy()
        start, end = _default_range(cls.default_hours)
        data.setdefault("start", start.strftime(DATETIME_INPUT))
        data.setdefault("end", end.strftime(DATETIME_INPUT))
        data.setdefault("bucket_width", "1h")
        if not query:
            data.setlist("group_by", ["tenant"])
        return cls(data)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        start, end, width = cleaned.get("start"), cleaned.get("end"), cleaned.get("bucket_width")
        if start and end and width and end > start:
            num_buckets = (end - start).total_seconds() / WIDTHS[width].seconds
            most = min(MAX_BUCKETS, MAX_PAGES * WIDTHS[width].max_limit)
            if num_buckets > most:
                self.add_error(
                    "bucket_width",
                    f"That is {int(num_buckets):,} buckets of {width} (at most {most:,}): "
                    "pick a wider bucket or a shorter range.",
                )
        return cleaned

    def model_names(self) -> list[str]:
        return [m.strip() for m in self.cleaned_data.get("models", "").split(",") if m.strip()]

    def chart_query(self) -> str:
        """The API query with the largest page the width allows: fewest round trips."""
        return f"{self.api_query()}&limit={WIDTHS[self.cleaned_data['bucket_width']].max_limit}"

    def api_query(self) -> str:
        data = self.cleaned_data
        params: dict[str, Any] = {
            "start_time": _unix(data["start"]),
            "end_time": _unix(data["end"]),
            "bucket_width": data["bucket_width"],
        }
        if data["group_by"]:
            params["group_by"] = ",".join(data["group_by"])
        if data["tenants"]:
            params["tenants"] = ",".join(t.slug for t in data["tenants"])
        if self.model_names():
            params["models"] = ",".join(self.model_names())
        return urlencode(params)


class InvoiceFilterForm(forms.Form):
    period = forms.DateField(
        required=False,
        input_formats=["%Y-%m"],
        widget=forms.DateInput(attrs={"type": "month"}, format="%Y-%m"),
        help_text="Invoices whose period starts in this month.",
    )
    tenant = forms.ModelChoiceField(
        queryset=Tenant.objects.all(), to_field_name="slug", required=False, empty_label="All"
    )
    status = forms.ChoiceField(choices=[("", "All"), *InvoiceStatus.choices], required=False)


class WhatIfForm(RangeForm):
    """Only rendered: the page's script posts the values to /api/v1/whatif/ as JSON."""

    default_hours = 1

    policy = forms.ChoiceField(
        choices=[(name, name) for name in POLICY_NAMES], initial=DEFAULT_POLICY
    )
    profile = forms.ChoiceField(
        choices=[(name, name) for name in PROFILES],
        initial=DEFAULT_PROFILE,
        help_text="The engine the replay simulates.",
    )

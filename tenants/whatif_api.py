"""POST /api/v1/whatif/: replay recorded traffic under proposed weights (staff only).

The view parses and shapes; `tenants.whatif` validates the rest and runs the replays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants import whatif
from tenants.permissions import IsStaff

# Year 9999: beyond it a unix time is no datetime.
_MAX_UNIX_S = 253_402_300_799


class UnixTimeField(serializers.IntegerField):
    """Whole seconds since the epoch: an integer (or integer string), never a bool or 1.5."""

    default_error_messages = {"invalid": "A whole number of seconds since 1970 is required."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=0, max_value=_MAX_UNIX_S, **kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or (isinstance(data, float) and not data.is_integer()):
            self.fail("invalid")
        if isinstance(data, str):
            digits = data.strip().removeprefix("-")
            if not (0 < len(digits) <= 20 and digits.isascii() and digits.isdigit()):
                self.fail("invalid")
        return int(super().to_internal_value(data))


class WhatIfRequestSerializer(serializers.Serializer):
    start_time = UnixTimeField()
    end_time = UnixTimeField()
    tenants = serializers.ListField(
        child=serializers.SlugField(), required=False, allow_empty=False
    )
    weights = serializers.DictField(
        child=serializers.DecimalField(max_digits=None, decimal_places=None),
        required=False,
        help_text="Proposed weights by tenant slug (> 0, at most 1000000); others keep theirs.",
    )
    policy = serializers.CharField(required=False, default=whatif.DEFAULT_POLICY)
    profile = serializers.CharField(required=False, default=whatif.DEFAULT_PROFILE)

    def to_internal_value(self, data: Any) -> Any:
        # A misspelt field must be an error, not a silently ignored option.
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class TenantOutcomeSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    weight = serializers.FloatField()
    weight_share = serializers.FloatField()
    served_share = serializers.FloatField(
        help_text="Share of service (input + 2 x output tokens) delivered while two or more "
        "tenants were backlogged; over the whole replay if that never happened."
    )
    served_tokens = serializers.IntegerField(
        help_text="Input + output tokens of finished requests."
    )
    num_requests = serializers.IntegerField()
    ttft_p50_ms = serializers.FloatField(allow_null=True)
    ttft_p95_ms = serializers.FloatField(allow_null=True)
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)


class ScenarioSerializer(serializers.Serializer):
    weights = serializers.DictField(child=serializers.FloatField())
    throughput_tokens_per_s = serializers.FloatField()
    makespan_s = serializers.FloatField()
    tenants = TenantOutcomeSerializer(many=True)


class ScenariosSerializer(serializers.Serializer):
    current = ScenarioSerializer()
    proposed = ScenarioSerializer()


class WhatIfResponseSerializer(serializers.Serializer):
    object = serializers.CharField()
    policy = serializers.CharField()
    profile = serializers.CharField()
    start_time = serializers.IntegerField()
    end_time = serializers.IntegerField()
    num_requests = serializers.IntegerField()
    scenarios = ScenariosSerializer()


def _body(result: whatif.WhatIfResult) -> dict[str, Any]:
    return {
        "object": "whatif",
        "policy": result.policy,
        "profile": result.profile,
        "start_time": int(result.start.timestamp()),
        "end_time": int(result.end.timestamp()),
        "num_requests": result.num_requests,
        "scenarios": {"current": asdict(result.current), "proposed": asdict(result.proposed)},
    }


def _datetime(unix_s: int) -> datetime:
    return datetime.fromtimestamp(unix_s, tz=UTC)


class WhatIfView(APIView):
    """Predict per-tenant shares and latency of recorded traffic under proposed weights."""

    permission_classes = [IsStaff]

    @extend_schema(request=WhatIfRequestSerializer, responses={200: WhatIfResponseSerializer})
    def post(self, request: Request) -> Response:
        serializer = WhatIfRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            result = whatif.what_if(
                _datetime(data["start_time"]),
                _datetime(data["end_time"]),
                data.get("tenants"),
                data.get("weights", {}),
                data["policy"],
                data["profile"],
            )
        except whatif.WhatIfError as error:
            raise ValidationError({error.field: [str(error)]}) from error
        return Response(WhatIfResponseSerializer(_body(result)).data)

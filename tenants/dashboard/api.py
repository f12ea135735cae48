"""GET /api/v1/live/: the overview's data, read from the workers' published states."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.dashboard.live import DEFAULT_WINDOW_S, WINDOWS_S, history_limit, live_view
from tenants.permissions import IsStaff
from workers import runtime


class LiveQuerySerializer(serializers.Serializer):
    window_s = serializers.ChoiceField(
        choices=WINDOWS_S,
        default=DEFAULT_WINDOW_S,
        help_text="How far back served tokens and throughput are counted, in seconds.",
    )


class LiveWorkerSerializer(serializers.Serializer):
    worker = serializers.CharField()
    model = serializers.CharField()
    policy = serializers.CharField()
    published_at = serializers.FloatField()
    num_in_flight = serializers.IntegerField()
    num_waiting = serializers.IntegerField()
    num_running = serializers.IntegerField()
    kv_blocks_used = serializers.IntegerField()
    kv_blocks_total = serializers.IntegerField()


class LiveTenantSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    weight = serializers.FloatField()
    weight_share = serializers.FloatField(help_text="weight / sum of the tenants' weights")
    served_tokens = serializers.IntegerField(help_text="input + output tokens in the window")
    served_share = serializers.FloatField()
    num_waiting = serializers.IntegerField()
    num_running = serializers.IntegerField()


class ThroughputPointSerializer(serializers.Serializer):
    time = serializers.FloatField(help_text="the bucket's start, unix seconds")
    tokens_per_s = serializers.FloatField()
    tenants = serializers.DictField(child=serializers.FloatField())


class LiveSerializer(serializers.Serializer):
    object = serializers.CharField(default="live")
    window_s = serializers.IntegerField()
    bucket_s = serializers.IntegerField(help_text="width of a throughput point, seconds")
    now = serializers.FloatField(
        allow_null=True, help_text="the newest state's time; null with no live worker"
    )
    served_tokens = serializers.IntegerField()
    workers = LiveWorkerSerializer(many=True)
    tenants = LiveTenantSerializer(many=True)
    throughput = ThroughputPointSerializer(many=True)


class LiveView(APIView):
    """Fairness right now: served vs weight share, queues, throughput and KV cache."""

    permission_classes = [IsStaff]

    @extend_schema(parameters=[LiveQuerySerializer], responses=LiveSerializer)
    def get(self, request: Request) -> Response:
        query = LiveQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        window_s = int(query.validated_data["window_s"])
        return Response(LiveSerializer(read_live(window_s)).data)


def read_live(window_s: int) -> dict[str, Any]:
    channels = runtime.channels()
    latest = channels.states()
    limit = history_limit(window_s)
    histories = {worker: channels.state_history(worker, limit) for worker in latest}
    return {"object": "live", **asdict(live_view(latest, histories, window_s))}

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
from wire import runtime
from wire.gate import GateState


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


class GateTenantSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    weight = serializers.FloatField()
    counter = serializers.FloatField(help_text="VTC's weighted virtual counter at the gate")
    num_seated = serializers.IntegerField(help_text="requests holding a seat in the pool")
    num_queued = serializers.IntegerField(help_text="requests waiting at the gate")


class GateSerializer(serializers.Serializer):
    capacity = serializers.IntegerField(help_text="seats of the pool's live workers")
    num_seated = serializers.IntegerField()
    workers = serializers.DictField(child=serializers.IntegerField())
    tenants = GateTenantSerializer(many=True)


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
    gate = GateSerializer(help_text="the engine pool's fair gate: the first queue")


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
    return {
        "object": "live",
        **asdict(live_view(latest, histories, window_s)),
        "gate": gate_view(runtime.gate().state()),
    }


def gate_view(state: GateState) -> dict[str, Any]:
    tenants = [{"tenant": name, **asdict(tenant)} for name, tenant in state.tenants.items()]
    return {**asdict(state), "tenants": tenants}

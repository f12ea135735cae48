"""Process-wide pieces, built once from Django settings: the channels and the engine host."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.conf import settings

from workers.channels import Channels, LocalChannels

if TYPE_CHECKING:
    from workers.engine_host import EngineHost, EngineSettings

_lock = threading.Lock()
_channels: Channels | None = None
_host: EngineHost | None = None


def channels() -> Channels:
    """Redis when REDIS_URL is set; otherwise in-process (embedded mode: web + worker)."""
    global _channels
    with _lock:
        if _channels is None:
            if settings.REDIS_URL:
                from workers.redis_channels import RedisChannels

                _channels = RedisChannels(settings.REDIS_URL)
            else:
                _channels = LocalChannels()
        return _channels


def engine_settings() -> EngineSettings:
    from workers.engine_host import EngineSettings

    on_cpu = _is_cpu_build()
    return EngineSettings(
        model_path=str(settings.PARITY_MODEL_PATH),
        model_name=settings.PARITY_MODEL_NAME,
        max_model_len=settings.PARITY_MAX_MODEL_LEN,
        max_num_seqs=settings.PARITY_MAX_NUM_SEQS,
        kv_cache_bytes=settings.PARITY_KV_CACHE_BYTES,
        policy=settings.PARITY_POLICY,
        slots=settings.PARITY_WORKER_SLOTS,
        dtype="float32" if on_cpu else "auto",
        enforce_eager=on_cpu,
    )


def _is_cpu_build() -> bool:
    import torch

    return not torch.cuda.is_available()


def current_host() -> EngineHost | None:
    return _host


def set_host(host: EngineHost | None) -> None:
    global _host
    _host = host

"""Process-wide pieces of a worker: the engine host, and the wire it talks on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from wire.runtime import channels, gate

__all__ = ["channels", "gate", "engine_settings", "current_host", "set_host"]

if TYPE_CHECKING:
    from workers.engine_host import EngineHost
    from workers.engine_settings import EngineSettings

_host: EngineHost | None = None


def engine_settings() -> EngineSettings:
    from workers.engine_settings import EngineSettings

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
        engine_nice=settings.PARITY_ENGINE_NICE,
    )


def _is_cpu_build() -> bool:
    import torch

    return not torch.cuda.is_available()


def current_host() -> EngineHost | None:
    return _host


def set_host(host: EngineHost | None) -> None:
    global _host
    _host = host

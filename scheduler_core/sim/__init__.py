"""A discrete-event simulator of a continuous-batching LLM engine."""

from scheduler_core.sim.engine import Simulator, simulate
from scheduler_core.sim.profiles import PROFILES, EngineProfile, ReservePolicy, get_profile
from scheduler_core.sim.records import RequestRecord, RequestStatus, ServiceSample, SimResult

__all__ = [
    "PROFILES",
    "EngineProfile",
    "RequestRecord",
    "RequestStatus",
    "ReservePolicy",
    "ServiceSample",
    "SimResult",
    "Simulator",
    "get_profile",
    "simulate",
]

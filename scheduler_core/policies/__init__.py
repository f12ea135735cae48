"""The policies: each a short `FairPolicy` subclass in its own module."""

from scheduler_core.policies.fcfs import FCFSPolicy
from scheduler_core.policies.justitia import JustitiaPolicy
from scheduler_core.policies.lcf import LCFPolicy
from scheduler_core.policies.rpm import RPMPolicy
from scheduler_core.policies.vtc import VTCPolicy
from scheduler_core.policies.vtc_predict import PredictiveVTCPolicy

__all__ = [
    "FCFSPolicy",
    "JustitiaPolicy",
    "LCFPolicy",
    "PredictiveVTCPolicy",
    "RPMPolicy",
    "VTCPolicy",
]

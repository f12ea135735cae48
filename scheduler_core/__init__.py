"""Parity's scheduling core: fair policies, the waiting queue, a simulator.

Pure, typed Python (numpy allowed): no Django, Celery, vLLM or torch here,
and no wall-clock reads (time is always passed in).
"""

from scheduler_core.apps import AppInfo, Application, AppType, CallSpec
from scheduler_core.costs import CostFunction, LinearCost, MemoryCost, ProfiledCost, make_cost
from scheduler_core.fair_queue import FairQueue
from scheduler_core.job import Job
from scheduler_core.policies import (
    FCFSPolicy,
    JustitiaPolicy,
    LCFPolicy,
    PredictiveVTCPolicy,
    RPMPolicy,
    VTCPolicy,
)
from scheduler_core.policy import Admission, Charge, FairPolicy, Snapshot
from scheduler_core.predictors import LengthPredictor, MovingAveragePredictor, OraclePredictor
from scheduler_core.registry import POLICY_NAMES, make_policy

__all__ = [
    "POLICY_NAMES",
    "Admission",
    "Charge",
    "AppInfo",
    "AppType",
    "Application",
    "CallSpec",
    "CostFunction",
    "FCFSPolicy",
    "FairPolicy",
    "FairQueue",
    "Job",
    "JustitiaPolicy",
    "LCFPolicy",
    "LengthPredictor",
    "LinearCost",
    "MemoryCost",
    "MovingAveragePredictor",
    "OraclePredictor",
    "PredictiveVTCPolicy",
    "ProfiledCost",
    "RPMPolicy",
    "Snapshot",
    "VTCPolicy",
    "make_cost",
    "make_policy",
]

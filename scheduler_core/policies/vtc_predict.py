"""VTC with output-length prediction (paper §4.4): bill the prediction up front."""

from __future__ import annotations

from scheduler_core.costs import CostFunction
from scheduler_core.job import Job
from scheduler_core.policies.vtc import VTCPolicy
from scheduler_core.policy import JobLedger
from scheduler_core.predictors import LengthPredictor


class PredictiveVTCPolicy(VTCPolicy):
    """VTC that bills `cost(p, predicted)` at admission, then only output
    beyond the prediction, and refunds the unused prediction at finish.

    Billing up front stops a tenant with long outputs from looking cheap
    while its requests are still running, which plain VTC allows.
    """

    def __init__(
        self,
        predictor: LengthPredictor,
        cost: CostFunction | None = None,
        *,
        name: str = "vtc-predict",
    ) -> None:
        super().__init__(cost)
        self.name = name
        self.predictor = predictor

    def _first_admission(self, job: Job, ledger: JobLedger) -> None:
        predicted = self.predictor.predict(job)

        def predict() -> None:
            ledger.predicted_output = predicted

        self._rebill(job, ledger, predict)
        super()._first_admission(job, ledger)

    def _billable(self, ledger: JobLedger) -> tuple[int, int]:
        return ledger.input_tokens, max(ledger.output_tokens, ledger.predicted_output)

    def _closed(self, job: Job, ledger: JobLedger) -> None:
        def refund() -> None:
            ledger.predicted_output = 0

        self._rebill(job, ledger, refund)
        self.predictor.observe(job, ledger.output_tokens)

"""The learned demand predictor (a small torch MLP) and its training CLI.

Importing this package stays cheap and torch-free: torch is loaded only by
`load_mlp_predictor`, by `scheduler_core.predict.mlp` and by the training CLI
(`python -m scheduler_core.predict train`).
"""

from __future__ import annotations

from pathlib import Path

from scheduler_core.demand import DemandPredictor

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "justitia_mlp.json"


def load_mlp_predictor(path: Path | None = None) -> DemandPredictor:
    """The MLP demand predictor with the weights at `path` (default: the shipped ones)."""
    from scheduler_core.predict.mlp import MLPDemand  # torch loads here, not at import

    return MLPDemand.load(DEFAULT_WEIGHTS if path is None else path)


__all__ = ["DEFAULT_WEIGHTS", "load_mlp_predictor"]

"""The learned demand predictor: a small torch MLP from arrival features to log cost.

Weights are stored as JSON (feature names, standardisation, layers), so the
file is small, readable, and shipped like the package's other data files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scheduler_core.apps import AppInfo
from scheduler_core.predict.features import FEATURE_NAMES, HistoryFeatures

WEIGHTS_FORMAT = "parity-demand-mlp/1"
# exp(40) KV token-steps is far beyond any application; the cap keeps a
# wild input's prediction finite.
_MAX_LOG_COST = 40.0


def build_network(num_inputs: int, hidden: tuple[int, ...]) -> Any:
    """`num_inputs -> hidden... -> 1` with ReLU between layers."""
    layers: list[Any] = []
    width = num_inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


@dataclass(frozen=True, slots=True)
class DemandModel:
    """A trained network's layers plus the standardisation its inputs were trained with.

    Inference runs the layers as plain `addmm` and `relu` rather than through
    `nn.Module` calls: half the time, and the scheduler predicts at every
    arrival. `layers` holds `(weight, bias)` per linear layer, in torch's
    `(out, in)` weight layout.
    """

    layers: tuple[tuple[Any, Any], ...]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_network(cls, network: Any, mean: np.ndarray, std: np.ndarray) -> DemandModel:
        linears = [module for module in network if isinstance(module, nn.Linear)]
        layers = tuple(
            (layer.weight.detach().clone(), layer.bias.detach().clone()) for layer in linears
        )
        return cls(layers, mean.astype(np.float32), std.astype(np.float32))

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(int(weight.shape[0]) for weight, _ in self.layers[:-1])

    def predict_log_cost(self, features: np.ndarray) -> np.ndarray:
        """Log cost for each row of `features` (or for a single feature vector)."""
        rows = np.atleast_2d((features - self.mean) / self.std).astype(np.float32)
        with torch.inference_mode():
            hidden = torch.from_numpy(rows)
            for weight, bias in self.layers[:-1]:
                hidden = torch.relu(torch.addmm(bias, hidden, weight.T))
            weight, bias = self.layers[-1]
            output = torch.addmm(bias, hidden, weight.T).squeeze(-1)
        return np.clip(np.asarray(output.numpy(), dtype=np.float32), 0.0, _MAX_LOG_COST)

    def save(self, path: Path) -> None:
        document = {
            "format": WEIGHTS_FORMAT,
            "feature_names": list(FEATURE_NAMES),
            "hidden": list(self.hidden),
            "mean": _rounded(self.mean),
            "std": _rounded(self.std),
            "layers": [
                {"weight": _rounded(weight), "bias": _rounded(bias)} for weight, bias in self.layers
            ],
        }
        path.write_text(json.dumps(document, separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: Path) -> DemandModel:
        document = json.loads(path.read_text())
        _check_compatible(document, path)
        try:
            layers = tuple(
                (_tensor(saved["weight"]), _tensor(saved["bias"])) for saved in document["layers"]
            )
            mean = np.array(document["mean"], dtype=np.float32)
            std = np.array(document["std"], dtype=np.float32)
        except (KeyError, TypeError) as error:
            raise ValueError(f"{path}: malformed weights file ({error!r})") from error
        _check_shapes(layers, path)
        return cls(layers, mean, std)


def _tensor(values: Any) -> Any:
    return torch.tensor(values, dtype=torch.float32)


def _rounded(values: Any) -> Any:
    # Seven significant digits is float32's precision: the file stays small
    # and the loaded model predicts what the trained one did.
    array = values.detach().numpy() if isinstance(values, torch.Tensor) else values
    return np.vectorize(lambda x: float(f"{x:.7g}"), otypes=[float])(array).tolist()


def _check_compatible(document: Any, path: Path) -> None:
    # Stale weights trained on other features would predict nonsense quietly.
    if not isinstance(document, dict) or document.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not a {WEIGHTS_FORMAT} weights file")
    if tuple(document.get("feature_names", ())) != FEATURE_NAMES:
        raise ValueError(f"{path}: trained on other features; retrain the predictor")


def _check_shapes(layers: tuple[tuple[Any, Any], ...], path: Path) -> None:
    widths = [len(FEATURE_NAMES)]
    for weight, bias in layers:
        if weight.dim() != 2 or weight.shape[1] != widths[-1] or bias.shape != weight.shape[:1]:
            raise ValueError(f"{path}: layer shapes do not chain from {len(FEATURE_NAMES)} inputs")
        widths.append(int(weight.shape[0]))
    if widths[-1] != 1:
        raise ValueError(f"{path}: the last layer must have one output")


class MLPDemand:
    """A `DemandPredictor` backed by `DemandModel`, learning tenants' styles as it goes.

    The network is fixed; only the per-tenant history behind its features
    grows through `observe`.
    """

    name = "mlp"

    def __init__(self, model: DemandModel, history: HistoryFeatures | None = None) -> None:
        self.model = model
        self.history = HistoryFeatures() if history is None else history

    @classmethod
    def load(cls, path: Path) -> MLPDemand:
        return cls(DemandModel.load(path))

    def predict(self, info: AppInfo) -> float:
        log_cost = float(self.model.predict_log_cost(self.history.features(info))[0])
        return max(1.0, math.exp(log_cost))

    def observe(self, info: AppInfo, cost: float) -> None:
        self.history.observe(info, cost)

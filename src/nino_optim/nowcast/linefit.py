"""Linefit and Linefit+ (paper appendix A.2, A.3): closed-form per-parameter line extrapolation.

Each parameter's last c values are fit by a line ``a * x + b`` over ``x = 1..c`` by least squares; Linefit+
weights the residuals by ``mu = [1/c, 2/c, ..., 1]`` so that recent states count more. Both fits are linear in
the states, so the prediction is one fixed weighted sum of the c states: the weights are computed once.
"""
from __future__ import annotations

import torch

from ..graph.neural_graph import NeuralGraph


def linefit_coefficients(context: int, at: float, weighted: bool) -> torch.Tensor:
    """Weights w [c] (float64) such that ``states @ w`` is the fitted line evaluated at ``x = at`` (x = 1..c).

    Weighted least squares with residual weights mu_t (squared in the objective, as ``||mu * r||_2`` is).
    """
    x = torch.arange(1, context + 1, dtype=torch.float64)
    w = (x / context) ** 2 if weighted else torch.ones_like(x)
    x_mean = (w * x).sum() / w.sum()
    # slope a = sum w (x - x_mean)(y - y_mean) / sum w (x - x_mean)^2, intercept through the weighted means
    slope = w * (x - x_mean) / (w * (x - x_mean) ** 2).sum()
    mean = w / w.sum()
    return mean + (at - x_mean) * slope


class Linefit:
    """Per-parameter line extrapolation; ``weighted=True`` is Linefit+.

    Args:
        weighted: weight residuals by ``[1/c, ..., 1]`` (Linefit+).
        horizon: how far ahead to evaluate the line, in state spacings past the newest state. ``None`` (the
            paper's eq. 10, ``x = 2c``) looks c spacings ahead whatever ``k`` is; ``"k"`` follows the k passed to
            ``predict`` (the k-decay schedule).
    """

    max_horizon = 40

    def __init__(self, weighted: bool = False, horizon: int | str | None = None):
        if horizon not in (None, "k") and not (isinstance(horizon, int) and horizon > 0):
            raise ValueError(f"horizon must be None, 'k' or a positive int, got {horizon!r}")
        self.weighted = weighted
        self.horizon = horizon

    def __repr__(self) -> str:
        return f"Linefit(weighted={self.weighted}, horizon={self.horizon!r})"

    def predict(self, graph: NeuralGraph | None, states: torch.Tensor, k: int) -> torch.Tensor:
        """states [P, c] oldest to newest -> predicted parameters [P] (float32, or float64 for float64 states)."""
        c = states.shape[1]
        ahead = c if self.horizon is None else (k if self.horizon == "k" else self.horizon)
        dtype = torch.float64 if states.dtype == torch.float64 else torch.float32
        coef = linefit_coefficients(c, at=c + ahead, weighted=self.weighted).to(states.device, dtype)
        return states.to(dtype) @ coef

import pytest
import torch

from nino_optim.nowcast.linefit import Linefit, linefit_coefficients


def test_exact_on_straight_lines():
    t = torch.arange(1, 6, dtype=torch.float32)
    states = torch.stack([2 * t + 1, -0.5 * t, torch.full_like(t, 3.0)])  # [3, 5]
    for weighted in (False, True):
        # paper eq. 10: the line at x = 2c
        assert torch.allclose(Linefit(weighted).predict(None, states, 40), torch.tensor([21.0, -5.0, 3.0]))
        # following k: x = c + k
        assert torch.allclose(Linefit(weighted, horizon="k").predict(None, states, 3),
                              torch.tensor([17.0, -4.0, 3.0]), atol=1e-5)


def test_linefit_plus_matches_weighted_least_squares():
    torch.manual_seed(0)
    states = torch.randn(50, 5, dtype=torch.float64)
    x = torch.arange(1, 6, dtype=torch.float64)
    mu = x / 5
    design = torch.stack([x, torch.ones(5, dtype=torch.float64)], 1) * mu[:, None]
    sol = torch.linalg.lstsq(design.expand(50, 5, 2), (states * mu)[..., None]).solution[..., 0]  # [50, 2]
    expected = sol[:, 0] * 10 + sol[:, 1]
    got = Linefit(weighted=True).predict(None, states, 1)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    assert not torch.allclose(Linefit(weighted=False).predict(None, states, 1).double(), expected, atol=1e-3)


def test_coefficients_sum_to_one():
    for weighted in (False, True):
        assert linefit_coefficients(5, 12.0, weighted).sum().item() == pytest.approx(1.0, abs=1e-6)


def test_rejects_bad_horizon():
    with pytest.raises(ValueError):
        Linefit(horizon=0)

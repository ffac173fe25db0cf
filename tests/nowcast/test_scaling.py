import pytest
import torch

from nino_optim.graph.neural_graph import ParamSlot
from nino_optim.nowcast.scaling import LayerwiseScaler


def _slots(shapes):
    slots, offset = [], 0
    for i, shape in enumerate(shapes):
        slots.append(ParamSlot(name=f"p{i}", shape=shape, offset=offset, placed=True, edge_type=1))
        offset += slots[-1].numel
    return slots


@pytest.mark.parametrize("c", [1, 5])
def test_windows_scaled_together_match_each_window_scaled_alone(c):
    """The batched [P, B, c] statistics (segment sums, no loop over tensors) are the per-window [P, c] ones."""
    params = _slots([(7, 3), (1,), (50,), (4, 2, 3, 3)])
    P, B = sum(p.numel for p in params), 6
    torch.manual_seed(0)
    states = torch.randn(P, B, c) * torch.linspace(0.1, 5.0, P)[:, None, None] + 3.0
    together = LayerwiseScaler(states, params)
    assert together.mean.shape == together.std.shape == (len(params), B)
    for b in range(B):
        alone = LayerwiseScaler(states[:, b], params)
        torch.testing.assert_close(together.mean[:, b], alone.mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(together.std[:, b], alone.std, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(together.scale(states)[:, b], alone.scale(states[:, b]), rtol=1e-5, atol=1e-5)
    if c == 1:  # a one-element tensor seen once has no spread: std 0, not NaN
        assert torch.equal(together.std[1], torch.zeros(B))
    else:
        assert (together.std > 0).all()

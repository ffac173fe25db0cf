import pytest
import torch

from conftest import fm16
from nino_optim import build_neural_graph, load_nowcaster
from nino_optim.nowcast import scatter
from nino_optim.nowcast.scatter import scatter_add_, scatter_backend, set_scatter_backend

HAVE_TORCH_SCATTER = scatter._optional("torch_scatter") is not None


@pytest.fixture(autouse=True)
def restore_backend():
    yield
    set_scatter_backend("native")


def _sums(backend):
    set_scatter_backend(backend)
    gen = torch.Generator().manual_seed(0)
    index = torch.randint(0, 7, (50,), generator=gen)
    src = torch.randn(50, 3, generator=gen, requires_grad=True)
    out = scatter_add_(torch.zeros(7, 3), index, src)
    (out * torch.arange(21.0).view(7, 3)).sum().backward()
    return out.detach(), src.grad, index


def test_native_sums_and_gradients():
    out, grad, index = _sums("native")
    expected = torch.zeros(7, 3)
    gen = torch.Generator().manual_seed(0)
    torch.randint(0, 7, (50,), generator=gen)
    src = torch.randn(50, 3, generator=gen)
    for i, row in zip(index.tolist(), src):
        expected[i] += row
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(grad, torch.arange(21.0).view(7, 3)[index])


def test_backend_choice_is_checked():
    assert scatter_backend() == "native"  # the default
    with pytest.raises(ValueError, match="unknown scatter backend"):
        set_scatter_backend("cuda-magic")
    if not HAVE_TORCH_SCATTER:
        with pytest.raises(ImportError, match=r"nino-optim\[scatter\]"):
            set_scatter_backend("torch-scatter")


@pytest.mark.skipif(not HAVE_TORCH_SCATTER, reason="torch-scatter is not installed (the `scatter` extra)")
def test_torch_scatter_backend_equals_native():
    native, torch_scatter = _sums("native"), _sums("torch-scatter")
    assert torch.allclose(native[0], torch_scatter[0], atol=1e-6) and torch.equal(native[1], torch_scatter[1])
    graph = build_neural_graph(fm16())
    states = torch.randn(graph.num_params, 5).cumsum(1)
    nino = load_nowcaster("default")
    nino.edge_state, nino.chunk_size = "float32", 100  # small chunks: sparse pieces go through the scatter
    set_scatter_backend("native")
    reference = nino.predict(graph, states, 10)
    set_scatter_backend("torch-scatter")
    assert torch.allclose(nino.predict(graph, states, 10), reference, atol=1e-5)

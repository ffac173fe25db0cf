"""The fused Triton message sums (``nowcast/fused.py``) against the torch code they replace.

On a CUDA machine the cases run on the GPU. Without one they run on the CPU in Triton's interpreter, which has to
be chosen (``TRITON_INTERPRET=1``) before triton is first imported: a pytest run has usually imported it
already, and the variable would change triton for every later test, so ``test_cases_under_the_interpreter``
runs this file again in a child pytest with the variable set, where the device cases run on the CPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gpt_models import GPT
from nino_optim import build_neural_graph
from nino_optim.graph.blocks import Block, find_blocks
from nino_optim.nowcast import NiNoConfig, NiNoGNN, scatter
from nino_optim.nowcast.scatter import scatter_backend, set_scatter_backend
from nino_optim.nowcast.stream import stream_edge_forward

HAVE_TRITON = scatter._optional("triton") is not None
REPO = Path(__file__).resolve().parents[2]


def _device() -> str | None:
    """Where the kernel runs in this process: "cpu" under the interpreter, "cuda" on a GPU, else None."""
    if not HAVE_TRITON:
        return None
    from nino_optim.nowcast import fused

    if fused.interpreted():
        return "cpu"
    return "cuda" if torch.cuda.is_available() else None


DEVICE = _device()
needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed (the `fused` extra)")
needs_device = pytest.mark.skipif(
    DEVICE is None, reason="no CUDA GPU and no Triton interpreter in this process "
                           "(test_cases_under_the_interpreter runs these on the CPU in a child process)")


@pytest.fixture(autouse=True)
def restore_backend():
    yield
    set_scatter_backend("native")


def test_backend_choice(monkeypatch):
    if HAVE_TRITON:
        set_scatter_backend("triton")
        assert scatter_backend() == "triton"
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` fail
    with pytest.raises(ImportError, match=r"nino-optim\[fused\]"):
        set_scatter_backend("triton")


@needs_triton
@pytest.mark.skipif(DEVICE == "cpu", reason="this process is the interpreter run")
def test_cases_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
                          "-k", "not under_the_interpreter and not without_the_interpreter"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    # Every case must have run there: a skip would mean the interpreter was not in effect.
    assert run.returncode == 0 and "passed" in summary and "skipped" not in summary, \
        run.stdout[-6000:] + run.stderr[-3000:]


@needs_triton
@pytest.mark.skipif(DEVICE == "cpu", reason="the interpreter runs the kernel on the CPU")
def test_cpu_without_the_interpreter_falls_back_to_native():
    graph, attr = _graph("mlp")
    gnn = _random_gnn(16)
    native = stream_edge_forward(gnn, attr, graph, 3, 200)
    set_scatter_backend("triton")
    assert torch.equal(stream_edge_forward(gnn, attr, graph, 3, 200), native)


# --- the kernel itself ---------------------------------------------------------------------------------------


def _reference(e, weight, bias, c_src, src, dst, num_nodes):
    """The two sums in plain torch: esum, acc [N, D]."""
    esum = torch.zeros(num_nodes, e.shape[1], device=e.device).index_add_(0, dst, e)
    acc = torch.zeros_like(esum).index_add_(0, dst, (e @ weight.t() + bias) * c_src[src])
    return esum, acc


def _operands(n, d, num_nodes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    e = torch.randn(n, d, generator=gen)
    weight, bias = torch.randn(d, d, generator=gen) / d ** 0.5, torch.randn(d, generator=gen)
    c_src = torch.randn(num_nodes, d, generator=gen)
    return [t.to(DEVICE) for t in (e, weight, bias, c_src)]


def _fused_sums(e, weight, bias, c_src, num_nodes, **where):
    from nino_optim.nowcast import fused

    esum = torch.zeros(num_nodes, e.shape[1], device=e.device)
    acc = torch.zeros_like(esum)
    fused.message_sums_(esum, acc, e, weight, bias, c_src, **where)
    return esum, acc


def _assert_close(got, expected, tol=2e-5):
    for g, x in zip(got, expected):
        assert (g - x).abs().max() <= tol * max(1.0, float(x.abs().max()))


@needs_device
@pytest.mark.parametrize("n,d,block_m", [(1, 16, None), (37, 16, None), (37, 16, 16), (64, 32, None),
                                         (130, 64, None), (200, 128, 32)])
def test_sparse_piece(n, d, block_m):
    """Tiles of edges with gathered ids: n not a multiple of the tile height leaves a masked tail."""
    num_nodes = 23  # few nodes: several edges of a tile share a target
    e, weight, bias, c_src = _operands(n, d, num_nodes)
    gen = torch.Generator().manual_seed(1)
    src, dst = (torch.randint(0, num_nodes, (n,), generator=gen).to(DEVICE) for _ in range(2))
    got = _fused_sums(e, weight, bias, c_src, num_nodes, src=src, dst=dst, block_m=block_m)
    _assert_close(got, _reference(e, weight, bias, c_src, src, dst, num_nodes))


def _block_ends(block: Block) -> tuple[torch.Tensor, torch.Tensor]:
    """Source and target node of each edge of ``block``, in edge order, from its definition in ``Block``."""
    i = torch.arange(block.n_src)[:, None].expand(block.n_src, block.n_dst)
    j = torch.arange(block.n_dst)[None, :].expand(block.n_src, block.n_dst)
    if block.target_major:
        i, j = i.t(), j.t()
    return block.src + i.reshape(-1), block.dst + j.reshape(-1)


@needs_device
@pytest.mark.parametrize("target_major", [False, True])
@pytest.mark.parametrize("chunk,d", [(10**6, 32), (100, 32), (100, 128)])
def test_block_piece(target_major, chunk, d):
    """A dense block and its row slices (``Block.split``) in both orientations; 37 sources leave masked tiles."""
    block = Block(start=50, src=3, dst=40, n_src=37, n_dst=6, target_major=target_major)
    num_nodes = 50
    e_all, weight, bias, c_src = _operands(block.num_edges, d, num_nodes)
    src_all, dst_all = (t.to(DEVICE) for t in _block_ends(block))
    parts = block.split(chunk)
    assert len(parts) == (1 if chunk > block.num_edges else 3)
    for part in parts:
        rows = slice(part.start - block.start, part.start - block.start + part.num_edges)
        got = _fused_sums(e_all[rows], weight, bias, c_src, num_nodes, block=part)
        expected = _reference(e_all[rows], weight, bias, c_src, src_all[rows], dst_all[rows], num_nodes)
        _assert_close(got, expected)


@needs_device
def test_wrong_shapes_are_refused():
    e, weight, bias, c_src = _operands(10, 24, 5)
    ids = torch.zeros(10, dtype=torch.long, device=DEVICE)
    with pytest.raises(ValueError, match="power-of-two"):
        _fused_sums(e, weight, bias, c_src, 5, src=ids, dst=ids)
    e, weight, bias, c_src = _operands(10, 16, 5)
    with pytest.raises(ValueError, match="block has"):
        _fused_sums(e, weight, bias, c_src, 5, block=Block(0, 0, 2, 2, 3))


# --- streamed inference --------------------------------------------------------------------------------------


def _random_gnn(hid, std=0.2, seed=0) -> NiNoGNN:
    torch.manual_seed(seed)
    gnn = NiNoGNN(NiNoConfig(hid=hid))
    for p in gnn.parameters():  # larger than the official init, so every term of the message matters
        nn.init.normal_(p, std=std)
    return gnn


def _graph(name):
    """Small graphs, as the interpreter runs one tile in ~10 ms: an MLP (one source-major block, sparse rest) and
    a one-layer GPT with 8-wide blocks counted from 32 edges, so its attention keys are a target-major block."""
    if name == "gpt":
        graph = build_neural_graph(GPT(vocab=20, d=8, layers=1, heads=2))
        graph._layout = find_blocks(graph.edge_index, min_edges=32)
    else:
        graph = build_neural_graph(nn.Sequential(nn.Linear(40, 8), nn.ReLU(), nn.Linear(8, 3)))
        if name == "mlp-sparse":  # every edge through the sparse path
            graph.layout.blocks.clear()
            graph.layout.sparse = torch.arange(graph.num_edges)
    torch.manual_seed(1)
    return graph, graph.to_edges(torch.randn(graph.num_params, 5))


def _triton_vs_native(gnn, graph, attr, chunk, edge_state, k=7):
    gnn = gnn.to(DEVICE)
    native = stream_edge_forward(gnn, attr, graph, k, chunk, edge_state)
    set_scatter_backend("triton")
    fused = stream_edge_forward(gnn, attr, graph, k, chunk, edge_state)
    set_scatter_backend("native")
    return fused, native


@needs_device
@pytest.mark.parametrize("name,chunk,edge_state", [
    ("mlp", 10**4, "float32"), ("mlp", 10**4, "recompute"), ("mlp", 200, "float32"), ("mlp", 200, "recompute"),
    ("mlp-sparse", 200, "float32"), ("gpt", 10**4, "float32"), ("gpt", 10**4, "recompute"), ("gpt", 160, "float32"),
])
def test_streamed_inference_equals_native(name, chunk, edge_state):
    graph, attr = _graph(name)
    blocks = graph.layout.blocks
    if name == "gpt":
        assert any(b.target_major for b in blocks) and any(not b.target_major for b in blocks)
    if chunk < 10**4 and blocks:
        assert any(b.num_edges > chunk for b in blocks)  # some blocks are cut into row slices
    assert graph.layout.sparse.numel() > 0
    fused, native = _triton_vs_native(_random_gnn(16), graph, attr, chunk, edge_state)
    change = (native.cpu() - attr.view(graph.num_edges, graph.feat_size, 5)[:, :, -1]).abs().max()
    assert change > 0.1  # the messages matter to the prediction
    assert (fused - native).abs().max() < 1e-5


@needs_device
def test_streamed_inference_with_the_default_size():
    """hid = 128, as the official checkpoint: four BLOCK_K slices per product."""
    graph, attr = _graph("mlp")
    fused, native = _triton_vs_native(_random_gnn(128, std=0.05), graph, attr, 200, "float32")
    assert (fused - native).abs().max() < 1e-5 * max(1.0, float(native.abs().max()))


@needs_device
def test_a_hidden_size_the_kernel_lacks_runs_unfused():
    graph, attr = _graph("mlp")
    fused, native = _triton_vs_native(_random_gnn(8), graph, attr, 200, "float32")
    assert torch.equal(fused, native)

"""Helpers for the neuron-permutation (symmetry) tests of the graph families."""
import torch

from nino_optim.nowcast import NiNoConfig, NiNoGNN


def views(graph):
    """{parameter name: its flat indices, shaped like the parameter}."""
    idx = torch.arange(graph.num_params)
    return {p.name: idx[p.offset:p.offset + p.numel].view(p.shape) for p in graph.params}


def permuted_order(graph, perms):
    """Flat index order [P] that applies ``perms`` = {name: [(dim, index permutation), ...]} to the parameters."""
    by_name = views(graph)
    parts = []
    for p in graph.params:
        t = by_name[p.name]
        for dim, perm in perms.get(p.name, []):
            t = t.index_select(dim, perm)
        parts.append(t.reshape(-1))
    return torch.cat(parts)


def random_gnn():
    """A small NiNo GNN with weights large enough that its predictions depend visibly on the graph."""
    torch.manual_seed(0)
    gnn = NiNoGNN(NiNoConfig(hid=16))
    for p in gnn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return gnn


def assert_symmetry(make, graph, perms, run, gnn, atol=1e-5):
    """``perms`` (see ``permuted_order``) is a symmetry of the model built by ``make()`` (``run(model)`` gives the
    same outputs after the permutation), of its ``graph`` (a node permutation maps it onto itself), and of the
    nowcaster ``gnn`` (its prediction on permuted states is the permuted prediction)."""
    from test_attention import is_automorphism

    order = permuted_order(graph, perms)
    assert not torch.equal(order, torch.arange(graph.num_params))
    torch.manual_seed(0)
    model = make().eval()
    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    other = make().eval()
    torch.nn.utils.vector_to_parameters(flat[order], other.parameters())
    with torch.no_grad():
        assert torch.allclose(run(model), run(other), atol=1e-5)
    assert is_automorphism(graph, order)
    states = torch.randn(graph.num_params, 5, generator=torch.Generator().manual_seed(0))
    pred = gnn.predict(graph, states, 3)
    assert torch.allclose(gnn.predict(graph, states[order], 3), pred[order], atol=atol)

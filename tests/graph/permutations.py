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

"""Nowcasters: predict parameters ahead from their recent states."""
from .base import Nowcaster
from .gnn import NiNoConfig, NiNoGNN
from .hub import NowcasterLoadError, load_nowcaster, push_to_hub, save_pretrained
from .linefit import Linefit
from .scatter import scatter_backend, set_scatter_backend
from .subgraphs import SubgraphNowcaster
from .wnn import WNN, WNNConfig

__all__ = ["Linefit", "NiNoConfig", "NiNoGNN", "Nowcaster", "NowcasterLoadError", "SubgraphNowcaster", "WNN",
           "WNNConfig", "load_nowcaster", "push_to_hub", "save_pretrained", "scatter_backend", "set_scatter_backend"]

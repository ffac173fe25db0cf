"""Nowcasters: predict parameters ahead from their recent states."""
from .base import Nowcaster
from .errors import NowcasterLoadError
from .gnn import NiNoConfig, NiNoGNN
from .hub import load_nowcaster
from .linefit import Linefit
from .official import fetch_official
from .scatter import scatter_backend, set_scatter_backend
from .subgraphs import SubgraphNowcaster
from .wnn import WNN, WNNConfig

__all__ = ["Linefit", "NiNoConfig", "NiNoGNN", "Nowcaster", "NowcasterLoadError", "SubgraphNowcaster", "WNN",
           "WNNConfig", "fetch_official", "load_nowcaster", "scatter_backend", "set_scatter_backend"]

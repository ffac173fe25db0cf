"""nino-optim: faster training by neural nowcasting (NiNo, ICLR 2025) as a drop-in PyTorch optimizer."""
from .graph import NeuralGraph, build_neural_graph
from .nowcast import Nowcaster, NowcasterLoadError, load_nowcaster
from .optimizer import NiNoAdam

__version__ = "0.2.0"
__all__ = ["NeuralGraph", "NiNoAdam", "Nowcaster", "NowcasterLoadError", "build_neural_graph", "load_nowcaster"]

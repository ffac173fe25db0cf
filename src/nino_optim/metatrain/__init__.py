"""Meta-training the project's own NiNo: collect parameter trajectories, sample windows, train the GNN."""

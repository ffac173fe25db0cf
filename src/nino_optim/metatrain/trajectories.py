"""On-disk parameter trajectories: one directory per training run.

``<root>/<run_id>/meta.json``: task, architecture, seed, hyperparameters, parameter names and shapes, the
optimizer step of every saved state and the metrics measured there. ``<root>/<run_id>/states.safetensors``:
``states`` [n_states, P] float16 (flat parameters in ``named_parameters()`` order). A run directory appears
only once complete (written under a temporary name, then renamed), so an interrupted collection resumes by
skipping the runs that exist.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

META_NAME, STATES_NAME = "meta.json", "states.safetensors"


@dataclass
class Trajectory:
    """A loaded run: ``meta`` (the JSON dict) and ``states`` [n_states, P] float16."""

    meta: dict
    states: torch.Tensor

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]


def write_trajectory(root: str | os.PathLike, meta: dict, states: torch.Tensor) -> Path:
    """Atomically write a finished run under ``root/meta['run_id']``. states [n_states, P]."""
    from safetensors.torch import save_file

    root = Path(root)
    final = root / meta["run_id"]
    tmp = root / f".{meta['run_id']}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({"states": states.to(torch.float16).contiguous()}, tmp / STATES_NAME)
    (tmp / META_NAME).write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def is_complete(root: str | os.PathLike, run_id: str) -> bool:
    return (Path(root) / run_id / META_NAME).is_file() and (Path(root) / run_id / STATES_NAME).is_file()


def load_trajectory(path: str | os.PathLike) -> Trajectory:
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads((path / META_NAME).read_text())
    return Trajectory(meta, load_file(path / STATES_NAME)["states"])


def list_trajectories(root: str | os.PathLike) -> list[Path]:
    """Complete run directories under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and is_complete(root, p.name))

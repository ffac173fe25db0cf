"""One rank of the DDP test (tests/integrations/test_ddp.py); also runs under torchrun.

    python tests/integrations/_ddp_worker.py OUT_DIR          # with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set
    torchrun --nproc_per_node 2 tests/integrations/_ddp_worker.py OUT_DIR

Runs every scenario below on the gloo backend and writes ``OUT_DIR/rank{r}.pt``: per scenario the flat
parameters just before and after each nowcast step, at the end, the k-free prediction it would have used, and
the warnings raised.
"""
from __future__ import annotations

import os
import sys
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from nino_optim import NiNoAdam

PERIOD, CONTEXT, STEPS = 10, 5, 20  # nowcasts at steps 10 and 20


class RankDependent:
    """Predicts ``newest + shift[rank]`` (or NaN / raises on the calls listed for this rank)."""

    def __init__(self, rank, shifts, nan_calls=(), raise_calls=()):
        self.rank, self.shift = rank, shifts[rank]
        self.nan_calls, self.raise_calls = nan_calls, raise_calls
        self.calls = 0

    def predict(self, graph, states, k):
        self.calls += 1
        if self.calls in self.raise_calls:
            raise RuntimeError(f"nowcaster failure on rank {self.rank}")
        pred = states[:, -1] + self.shift
        if self.calls in self.nan_calls:
            pred[0] = float("nan")
        return pred


SCENARIOS = {
    # every rank's nowcaster disagrees; rank 0's prediction must win everywhere
    "disagree": dict(shifts=(0.5, -3.0), dtype=torch.float32),
    # rank 0 predicts NaN on the first nowcast: every rank skips it together; the second one is applied
    "nan_rank0": dict(shifts=(0.5, 0.5), nan_calls={0: (1,)}, dtype=torch.float32),
    # rank 0's nowcaster raises on the first nowcast: every rank skips it
    "raise_rank0": dict(shifts=(0.5, 0.5), raise_calls={0: (1,)}, dtype=torch.float32),
    # rank 1's nowcaster would fail, but only rank 0 predicts: both nowcasts are applied
    "nan_rank1": dict(shifts=(0.5, 0.5), nan_calls={1: (1, 2)}, raise_calls={1: (1, 2)}, dtype=torch.float32),
    # a float64 model: the broadcast must not round the prediction to float32
    "float64": dict(shifts=(1e-9, 1e-9), dtype=torch.float64),
    # FSDP2 (fully_shard): the nowcast gathers the shards, rank 0 predicts, every rank writes back its shard
    "fsdp2_disagree": dict(shifts=(0.5, -3.0), dtype=torch.float32, fsdp=True),
    "fsdp2_nan_rank0": dict(shifts=(0.5, 0.5), nan_calls={0: (1,)}, dtype=torch.float32, fsdp=True),
}


def fully_shard_or_none():
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        try:
            from torch.distributed._composable.fsdp import fully_shard
        except ImportError:
            return None
    return fully_shard


def flat(model):
    """All parameters, whole (FSDP2 shards gathered)."""
    full = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
    return torch.cat([p.detach().reshape(-1) for p in full]).clone()


def run_scenario(name, rank, world):
    cfg = SCENARIOS[name]
    torch.manual_seed(0)  # same init everywhere (DDP would broadcast rank 0's anyway)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).to(cfg["dtype"])
    if cfg.get("fsdp"):
        fully_shard = fully_shard_or_none()
        if fully_shard is None:
            return None  # this PyTorch has no FSDP2
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        ddp = fully_shard(model)  # parameters are now DTensor shards
        assert all(type(p).__name__ == "DTensor" for p in model.parameters())
    else:
        ddp = DDP(model)
    nowcaster = RankDependent(rank, cfg["shifts"], cfg.get("nan_calls", {}).get(rank, ()),
                              cfg.get("raise_calls", {}).get(rank, ()))
    opt = NiNoAdam(model.parameters(), model=ddp, nowcaster=nowcaster, period=PERIOD, context=CONTEXT,
                   max_steps=100, lr=1e-2)
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees different data
    out = {"before": {}, "after": {}, "warnings": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, STEPS + 1):
            x = torch.randn(8, 4, generator=g, dtype=cfg["dtype"])
            y = torch.randn(8, 3, generator=g, dtype=cfg["dtype"])
            opt.zero_grad()
            if opt.need_grads:
                ((ddp(x) - y) ** 2).mean().backward()
            if step % PERIOD == 0:
                out["before"][step] = flat(model)
            opt.step()
            if step % PERIOD == 0:
                out["after"][step] = flat(model)
    out["warnings"] = [str(w.message) for w in caught if "NiNoAdam" in str(w.message)]
    out["final"] = flat(model)
    out["predict_calls"] = nowcaster.calls
    dist.barrier()
    return out


def fsdp1_error():
    """FSDP1 flattens the parameters into shards: NiNoAdam must refuse them with a clear error (or None)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    out = {}
    for use_orig_params in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
        wrapped = FSDP(model, use_orig_params=use_orig_params, device_id=torch.device("cpu"))
        for name, target in (("wrapped", wrapped), ("inner", model)):
            try:
                NiNoAdam(wrapped.parameters(), model=target, nowcaster=RankDependent(0, (0.5,)), period=PERIOD,
                         context=CONTEXT, max_steps=100)
                out[f"{name}_orig{int(use_orig_params)}"] = None
            except Exception as err:
                out[f"{name}_orig{int(use_orig_params)}"] = f"{type(err).__name__}: {err}"
    dist.barrier()
    return out


def main(out_dir):
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        results = {name: run_scenario(name, rank, world) for name in SCENARIOS}
        results["fsdp1"] = fsdp1_error()
    finally:
        dist.destroy_process_group()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])

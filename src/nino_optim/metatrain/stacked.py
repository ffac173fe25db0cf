"""Many Fashion-MNIST zoo runs of one architecture trained at once, as one model with stacked parameters.

A convnet of the FM-16 family has about 14k parameters: one run alone leaves a GPU idle between its tiny kernels,
so the collection is bound by kernel launches, not arithmetic. Stacking M runs' parameters along a new first
dimension and mapping one run's training step over it with ``torch.func.vmap`` launches the same kernels once
for all M. Every member keeps what makes its run its own (its seed's initialisation, its batch order, its learning
rate and weight decay), so each trajectory equals the one ``run_one`` records alone, up to float rounding.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from .collect import EVAL_EXAMPLES, EpochOrder, evaluate_every, trajectory_meta
from .trajectories import write_trajectory
from .zoo import RunSpec, build_model

EVAL_CHUNK = 8192  # test images x members per evaluation pass (bounds the activations' memory)


def stack_key(spec: RunSpec) -> str | None:
    """What runs must share to train together (data set, architecture, length, saving, batch size); None for
    runs that cannot stack: the byte-level GPTs draw text windows and scheduled runs change their learning rate
    every step, so they stay single runs."""
    if spec.dataset != "fashion-mnist" or spec.schedule != "constant":
        return None
    return json.dumps([spec.dataset, spec.arch, spec.steps, spec.save_every, spec.batch_size])


def stack_groups(specs: list[RunSpec], size: int) -> list[list[RunSpec]]:
    """``specs`` as jobs: runs with the same ``stack_key`` in groups of at most ``size``, every other run alone;
    in the order the specs first appear."""
    if size < 1:
        raise ValueError(f"stack size must be at least 1, got {size}")
    groups: dict[str, list[list[RunSpec]]] = {}
    jobs: list[list[RunSpec]] = []
    for spec in specs:
        key = stack_key(spec)
        if size == 1 or key is None:
            jobs.append([spec])
            continue
        open_groups = groups.setdefault(key, [])
        if not open_groups or len(open_groups[-1]) == size:
            open_groups.append([])
            jobs.append(open_groups[-1])  # filled in place as later specs of its key arrive
        open_groups[-1].append(spec)
    return jobs


class StackedAdam:
    """Adam (coupled weight decay) or AdamW (decoupled) for M runs stacked along dim 0, each its own.

    The update is ``torch.optim.Adam``'s / ``AdamW``'s, elementwise, with the learning rate and weight decay of
    each member broadcast over its slice. params: name -> [M, *shape], updated in place.
    """

    def __init__(self, params: dict[str, torch.Tensor], specs: list[RunSpec],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        device = next(iter(params.values())).device
        self.params, self.betas, self.eps, self.t = params, betas, eps, 0
        self.lr = torch.tensor([s.lr for s in specs], device=device)
        decoupled = torch.tensor([s.optimizer == "adamw" for s in specs], device=device)
        wd = torch.tensor([s.weight_decay for s in specs], device=device)
        self.coupled_wd, self.decoupled_wd = torch.where(decoupled, 0.0, wd), torch.where(decoupled, wd, 0.0)
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor]) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        bias1, bias2_sqrt = 1 - beta1 ** self.t, math.sqrt(1 - beta2 ** self.t)
        for name, p in self.params.items():
            per_member = (-1,) + (1,) * (p.dim() - 1)
            lr = self.lr.view(per_member)
            g = grads[name] + self.coupled_wd.view(per_member) * p
            p.mul_(1 - lr * self.decoupled_wd.view(per_member))
            self.m[name].lerp_(g, 1 - beta1)
            self.v[name].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (self.v[name].sqrt() / bias2_sqrt).add_(self.eps)
            p.sub_(self.m[name] * (lr / bias1) / denom)


def run_stack(specs: list[RunSpec], data, root: str | Path, device: torch.device | str = "cpu",
              progress: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    """Train ``specs`` (one ``stack_groups`` group) together and write each finished trajectory as ``run_one``
    would; a member whose training loss stops being finite is reported through ``log`` and not written.

    ``data``: Fashion-MNIST (``load_fashion_mnist()``). Returns the written trajectories' directories.
    """
    first = specs[0]
    if stack_key(first) is None or any(stack_key(s) != stack_key(first) for s in specs):
        raise ValueError("run_stack takes Fashion-MNIST runs of one architecture, length, saving and batch size; "
                         "group them with stack_groups")
    device, count = torch.device(device), len(specs)
    members = []
    for spec in specs:  # each initialised from its own seed, as run_one does
        torch.manual_seed(spec.seed)
        members.append(build_model(spec.arch))
    stacked, _ = stack_module_state(members)
    params = {name: p.detach().to(device) for name, p in stacked.items()}  # name -> [M, *shape]
    shapes = [[name, list(p.shape)] for name, p in members[0].named_parameters()]
    template = copy.deepcopy(members[0]).to("meta")  # structure only: the parameters come from ``params``

    def member_loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(template, p, (x,)), y)

    step_all = vmap(grad_and_value(member_loss))  # (params [M,...], x [M,B,...], y [M,B]) -> (grads, losses [M])
    logits_all = vmap(lambda p, x: functional_call(template, p, (x,)), in_dims=(0, None))

    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    test_x, test_y = data.test_x[:EVAL_EXAMPLES].to(device), data.test_y[:EVAL_EXAMPLES].to(device)

    @torch.no_grad()
    def accuracies() -> list[float]:
        correct = torch.zeros(count, dtype=torch.long, device=device)
        chunk = max(1, EVAL_CHUNK // count)
        for i in range(0, len(test_x), chunk):
            correct += (logits_all(params, test_x[i:i + chunk]).argmax(-1) == test_y[i:i + chunk]).sum(1)
        return [c / len(test_x) for c in correct.tolist()]

    def flat() -> torch.Tensor:  # [M, P], each member's parameters in named_parameters() order
        return torch.cat([params[name].reshape(count, -1) for name, _ in shapes], 1).cpu()

    orders = [EpochOrder(len(train_x), torch.Generator().manual_seed(s.seed)) for s in specs]
    opt = StackedAdam(params, specs)
    states, saved_steps = [flat()], [0]
    metrics = [[{"test_acc": acc}] for acc in accuracies()]
    every = evaluate_every(first)
    running, start = torch.zeros(count, device=device), time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=first.steps, desc=f"{count} x {first.run_id[:40]}", leave=False)
    for step in range(1, first.steps + 1):
        idx = torch.stack([order.next(first.batch_size) for order in orders]).to(device)  # [M, B]
        grads, losses = step_all(params, train_x[idx], train_y[idx])
        opt.step(grads)
        running += losses.detach()
        if step % first.save_every == 0:
            states.append(flat())
            saved_steps.append(step)
            accs = accuracies() if step % every == 0 or step == first.steps else None
            for i, loss in enumerate((running / first.save_every).tolist()):
                metrics[i].append({"train_loss": loss} | ({"test_acc": accs[i]} if accs else {}))
            running.zero_()
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    trajectories = torch.stack(states, 1)  # [M, n_states, P]
    written = []
    for i, spec in enumerate(specs):
        if not all(math.isfinite(m["train_loss"]) for m in metrics[i][1:]):
            log(f"skipped: {spec.run_id}: the training loss stopped being finite; not recorded")
            continue
        meta = trajectory_meta(spec, saved_steps, metrics[i], shapes, seconds, device) | {"stacked": count}
        written.append(write_trajectory(root, meta, trajectories[i]))
    return written

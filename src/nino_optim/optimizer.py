"""``NiNoAdam``: a drop-in optimizer that lets a base optimizer train and a nowcaster jump ahead.

Every ``period // context`` real steps the current parameters are captured; the call that fills the last
of the ``context`` slots is a nowcast: instead of the base step, the nowcaster predicts the parameters
``k`` capture intervals ahead and they are written in place. Everything else is the base optimizer's:
``param_groups`` *is* its list, so LR schedulers, ``GradScaler`` and frameworks see a normal optimizer.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer

from .graph import NeuralGraph, graph_parameters
from .graph.chain import build_chain_graph
from .graph.neural_graph import LPE_DIM
from .history import History, history_device_for
from .model_graph import ModelGraph
from .nowcast import load_nowcaster
from .schedule import capture_slot, filled_slots, horizon_at, k_schedule, scaled_horizon, validate_timeline

try:  # FSDP2 (fully_shard) parameters are DTensors
    from torch.distributed.tensor import DTensor as _DTensor, distribute_tensor as _distribute_tensor
except ImportError:  # torch < 2.4
    try:
        from torch.distributed._tensor import DTensor as _DTensor, distribute_tensor as _distribute_tensor
    except ImportError:
        _DTensor = _distribute_tensor = None

DEFAULT_MAX_STEPS = 10_000  # the paper's training length; k reaches 1 there and stays at 1


class NiNoAdam(Optimizer):
    """Adam (or any base optimizer) with periodic neural nowcasting.

    Args:
        params: parameters or param groups, as for any optimizer (ignored when ``base`` is an instance; then
            pass ``None`` or the same parameters).
        model: the module being trained; its structure gives the neural graph. Without it the parameters are
            treated as a chain in the order given.
        lr: learning rate of the base optimizer (the default Adam, or a ``base`` class it is passed to).
        betas: Adam's betas (passed to a ``base`` class when given).
        eps: Adam's epsilon (passed to a ``base`` class when given).
        weight_decay: the base optimizer's weight decay (passed to a ``base`` class when given).
        base: ``None`` (Adam), an optimizer class (built with ``params`` and the remaining kwargs) or instance.
        nowcaster: any spec ``load_nowcaster`` takes, or an object with ``predict(graph, states, k)``.
        period: steps between nowcasts (one of every ``period`` calls is a nowcast).
        context: states the nowcaster reads; ``period`` must be a multiple of it.
        max_steps: planned number of optimizer steps, which sets the k-decay. Default: 10,000 (with a warning).
        k_decay: the power p of the k-decay; 0 keeps k at its maximum.
        max_horizon: K, the first (largest) k. Default: the nowcaster's ``max_horizon``, else 40.
        schedule_aware: shorten each jump to the movement the coming steps will make under the learning-rate
            schedule: k is scaled by the learning-rate mass of the coming k * (period // context) steps relative
            to the context window's rate (``schedule.lr_mass_ratio``; the rate is read from ``param_groups`` at
            each capture). With a constant rate nothing changes; a jump is never longer than the k-decay's.
        history_device: where past states live. Default (None): the parameters' device when it is the CPU, else
            the CPU, in pinned memory for CUDA parameters, so the history (``context`` copies of the model, more than
            Adam's state) never takes accelerator memory unless asked; a capture is then one asynchronous
            device-to-host copy every ``period // context`` steps. An explicit device (e.g. ``"cuda"``) wins.
        history_dtype: how past states are stored (default: float32, or float64 for float64 models).
        nowcaster_device: where a neural nowcaster computes. Default: the parameters' device for a nowcaster
            loaded from a spec; a nowcaster object passed in stays where it is unless this is given.
        reset_base_state: clear the base optimizer's state (e.g. Adam moments) of the parameters a nowcast
            writes. Off by default, as in the official code.
        final_nowcast: also nowcast in the last ``period // context`` steps before ``max_steps`` (the official
            timeline's nowcast on the last step). Off by default: no step follows to correct a bad jump there, and
            measured final-step nowcasts cost up to 0.19 perplexity or 14 points of accuracy; the base optimizer
            takes that step instead. Nowcasts past ``max_steps`` are unaffected.
        lpe: use Laplacian positional node features in the graph.
        **base_kwargs: further keyword arguments for the base optimizer.
    """

    def __init__(self, params: Iterable | None, model: nn.Module | None = None, *, lr: float = 1e-3,
                 betas: tuple[float, float] | None = None, eps: float | None = None,
                 weight_decay: float | None = None, base: type[Optimizer] | Optimizer | None = None,
                 nowcaster: Any = "default", period: int = 1000, context: int = 5, max_steps: int | None = None,
                 k_decay: float = 2.0, max_horizon: int | None = None, schedule_aware: bool = True,
                 history_device: torch.device | str | None = None, history_dtype: torch.dtype | None = None,
                 nowcaster_device: torch.device | str | None = None, reset_base_state: bool = False,
                 final_nowcast: bool = False, lpe: bool = True, **base_kwargs: Any):
        self.interval = validate_timeline(period, context)
        _check_arguments(max_steps=max_steps, k_decay=k_decay, max_horizon=max_horizon, history_dtype=history_dtype,
                         flags={"schedule_aware": schedule_aware, "reset_base_state": reset_base_state, "lpe": lpe,
                                "final_nowcast": final_nowcast})
        self.base = _make_base(params, base, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **base_kwargs)
        self.nowcaster = load_nowcaster(nowcaster)
        supported = getattr(self.nowcaster, "max_horizon", None)
        if max_horizon is not None and supported is not None and max_horizon > supported:
            raise ValueError(f"max_horizon={max_horizon}, but the nowcaster predicts at most {supported} steps "
                             f"ahead; pass max_horizon <= {supported} or leave it None")
        self.period, self.context = period, context
        self.reset_base_state = reset_base_state
        self.schedule_aware, self.final_nowcast = schedule_aware, final_nowcast
        self._capture_lrs = [0.0] * context  # the learning rate at each capture of the current cycle

        base_params = [p for group in self.base.param_groups for p in group["params"]]
        super().__init__(base_params, self.base.defaults)
        # Share the base optimizer's containers: schedulers and frameworks edit these in place.
        self.param_groups, self.state, self.defaults = self.base.param_groups, self.base.state, self.base.defaults
        self._linked = True

        if any(getattr(p, "_fsdp_flattened", False) for p in base_params):  # FSDP1 marks what it flattens
            raise ValueError("NiNoAdam does not support FSDP1 (FullyShardedDataParallel): its parameters are "
                             "flattened shards, from which no neural graph can be built. Shard the model with "
                             "FSDP2 (torch.distributed.fsdp.fully_shard) instead, which NiNoAdam supports.")
        self._graph, self._flat_params = _graph_for(model, base_params, lpe)
        self._known = {id(p) for p in self._flat_params}
        self._sharded = _DTensor is not None and any(isinstance(p, _DTensor) for p in self._flat_params)
        self._check_known(base_params)
        first = self._flat_params[0]
        if history_dtype is None:
            history_dtype = torch.float64 if any(p.dtype == torch.float64 for p in self._flat_params) else torch.float32
        history_device, pin = history_device_for(first.device, history_device)
        self.history = History(self._flat_params, context, history_device, history_dtype, pin_memory=pin)
        if nowcaster_device is None and isinstance(nowcaster, (str, os.PathLike)):
            nowcaster_device = first.device  # a DTensor's is its local shard's device
        if nowcaster_device is not None and isinstance(self.nowcaster, nn.Module):
            self.nowcaster.to(nowcaster_device)

        if max_steps is None:
            warnings.warn(f"NiNoAdam: max_steps not given; the k-decay assumes {DEFAULT_MAX_STEPS} steps "
                          f"(k = 1 after that). Pass max_steps=<total optimizer steps> for the right schedule.",
                          stacklevel=2)
            max_steps = DEFAULT_MAX_STEPS
        horizon = max_horizon if max_horizon is not None else supported or 40
        self.k_schedule = k_schedule(max_steps, period, horizon, k_decay)
        self.max_steps = max_steps
        self._calls = 0

    @property
    def graph(self) -> NeuralGraph:
        """The model's neural graph (final from the end of the first step on; see ``model_graph.py``)."""
        return self._graph.get()

    # ----------------------------------------------------------------------------------------- timeline
    @property
    def steps_done(self) -> int:
        """Completed calls to ``step()`` (real optimizer steps, nowcasts included)."""
        return self._calls

    def _is_nowcast(self, call: int) -> bool:
        if capture_slot(call, self.interval, self.context) != self.context - 1:
            return False
        return self.final_nowcast or not self.max_steps - self.interval < call <= self.max_steps

    @property
    def need_grads(self) -> bool:
        """False when the next ``step()`` is a nowcast, which ignores gradients: the loop may skip backward."""
        return not self._is_nowcast(self._calls + 1)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimizer step: the base step, or on every ``period``-th call a nowcast.

        On a nowcast call the closure (if any) is still evaluated once, with gradients enabled, and its loss
        returned, so loops that log the closure's loss keep working.
        """
        call = self._calls + 1
        slot = capture_slot(call, self.interval, self.context)
        if slot is not None:  # FSDP2 shards are gathered (a collective: every rank captures on the same calls)
            self.history.capture([_full(p) for p in self._flat_params] if self._sharded else self._flat_params,
                                 slot)
            self._capture_lrs[slot] = self._current_lr()
        if self._is_nowcast(call):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            self._nowcast(call)
        else:
            loss = self.base.step(closure) if closure is not None else self.base.step()
        self._calls = call
        if not self._graph.ready:  # the first batch has been seen: report the graph's problems now, not at a nowcast
            self._finalise_graph()
        return loss

    def _finalise_graph(self) -> None:
        """Build the final graph (from the first batch where tracing needed one) and pass on its warnings with a
        pointer to ``opt.graph.summary()``."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self._graph.get()
        for w in caught:
            message = str(w.message)
            if message.startswith("neural graph of"):
                message += ". Nowcasts still run; `opt.graph.summary()` shows what the graph holds"
            warnings.warn(message, w.category, stacklevel=3)

    # ----------------------------------------------------------------------------------------- nowcast
    def _current_lr(self) -> float:
        """The learning rate of this step, averaged over param groups weighted by their number of elements."""
        sizes = [sum(p.numel() for p in g["params"]) for g in self.param_groups]
        lrs = [float(g.get("lr", 0.0)) for g in self.param_groups]
        return sum(n * lr for n, lr in zip(sizes, lrs)) / max(1, sum(sizes))

    def _horizon(self, call: int) -> tuple[int, float]:
        """(k to ask the nowcaster for, fraction of its jump to take): the k-decay's (k, 1.0), or with
        ``schedule_aware`` its horizon scaled by the coming learning-rate mass (``schedule.scaled_horizon``)."""
        k = horizon_at(call, self.k_schedule, self.period)
        return scaled_horizon(k, self._capture_lrs, self.interval) if self.schedule_aware else (k, 1.0)

    def _nowcast(self, call: int) -> None:
        k, fraction = self._horizon(call)
        num_params = self.history.buffer.shape[1]
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        pred, problem = None, None
        if not distributed or dist.get_rank() == 0:
            pred, problem = self._predict(k)
            if pred is not None and fraction < 1.0:  # part of the way from the newest state to the prediction
                newest = self.history.states()[:, -1].to(pred)
                pred = torch.lerp(newest, pred, fraction)
        if distributed:  # rank 0 predicts; a rejected prediction travels as NaN so every rank skips together
            # In the history's dtype (a float64 model's prediction is not rounded to float32), on a device the
            # backend can send (NCCL only sends CUDA tensors, even when the history is kept on the CPU).
            dtype = torch.promote_types(self.history.buffer.dtype, torch.float32)  # never round to a half type
            buf = torch.full((num_params,), float("nan"), dtype=dtype,
                             device=_comm_device(self.history.buffer.device))
            if pred is not None:
                buf.copy_(pred)
            dist.broadcast(buf, src=0)
            pred = buf
            if problem is None and not torch.isfinite(buf).all():
                problem = "the prediction (broadcast from rank 0) is not finite"
        if problem is not None:
            warnings.warn(f"NiNoAdam: nowcast at step {call} skipped, parameters left unchanged: {problem}",
                          stacklevel=3)
            return
        writable = {id(p) for g in self.param_groups for p in g["params"] if p.requires_grad}
        for info, p in zip(self.graph.params, self._flat_params):
            if id(p) in writable:
                _write(p, pred[info.offset: info.offset + info.numel].view(p.shape))
                if self.reset_base_state:
                    self.state.pop(p, None)

    def _predict(self, k: int) -> tuple[torch.Tensor | None, str | None]:
        """The nowcaster's prediction [P] and None, or None and why it cannot be used."""
        try:
            # A neural nowcaster reads the states where it computes: a transient [P, c] copy there during the
            # nowcast, rather than building every edge feature on the CPU when the history lives there.
            pred = self.nowcaster.predict(self.graph, self.history.states(_module_device(self.nowcaster)), k)
        except Exception as err:  # a failed nowcast must never stop training
            return None, f"the nowcaster raised {type(err).__name__}: {err}"
        if not isinstance(pred, torch.Tensor) or pred.shape != (self.graph.num_params,):
            shape = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
            return None, f"the nowcaster returned {shape}, expected a tensor of shape ({self.graph.num_params},)"
        if not torch.isfinite(pred).all():
            bad = int((~torch.isfinite(pred)).sum())
            return None, f"the prediction has {bad} non-finite values (NaN/inf)"
        return pred, None

    # ----------------------------------------------------------------------------------------- optimizer API
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not getattr(self, "_linked", False):  # called by Optimizer.__init__ before the base is linked
            return super().add_param_group(param_group)
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)  # may be a generator
        self._check_known(params)
        self.base.add_param_group({**param_group, "params": params})

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict plus a ``"nino"`` entry: step counter and captured states.

        Hooks registered with ``register_state_dict_pre_hook`` / ``..._post_hook`` run as for any optimizer.
        """
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        state = self.base.state_dict()
        filled = filled_slots(self._calls, self.interval, self.context)
        num_params = self.history.buffer.shape[1]
        graph = self._graph.get() if self._graph.ready else None
        state["nino"] = {"version": 1, "steps_done": self._calls, "period": self.period, "context": self.context,
                         "num_params": num_params, "history": self.history.export(filled),
                         "capture_lrs": self._capture_lrs[:filled],
                         # Eigenvectors of degenerate eigenvalues depend on floating-point noise: keep the ones used.
                         "lpe": graph.lpe if graph is not None and graph.has_lpe else None}
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state)
            state = state if result is None else result
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``; everything is checked before anything is changed."""
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            state_dict = state_dict if result is None else result
        state_dict = dict(state_dict)
        nino = state_dict.pop("nino", None)
        if nino is not None:
            if (nino["period"], nino["context"]) != (self.period, self.context):
                raise ValueError(f"checkpoint was saved with period={nino['period']}, context={nino['context']}; "
                                 f"this optimizer has period={self.period}, context={self.context}")
            num_params = self.history.buffer.shape[1]
            if nino["num_params"] != num_params or nino["history"].shape[1:] != (num_params,):
                raise ValueError(f"checkpoint holds states of {nino['num_params']} parameters; this model has "
                                 f"{num_params}: was it saved for another model?")
            if nino["history"].shape[0] != filled_slots(nino["steps_done"], self.interval, self.context):
                raise ValueError("checkpoint history does not match its step counter: the file is damaged")
            lpe = nino.get("lpe")
            nodes = self.graph.num_nodes if self._graph.ready else lpe.shape[0] if lpe is not None else 0
            if lpe is not None and tuple(lpe.shape) != (nodes, LPE_DIM):
                raise ValueError(f"checkpoint LPE has shape {tuple(lpe.shape)}; this model's graph has {nodes} "
                                 f"nodes: was it saved for another model?")
        self.base.load_state_dict(state_dict)
        self.param_groups, self.state = self.base.param_groups, self.base.state  # the base made new containers
        if nino is None:
            warnings.warn("NiNoAdam.load_state_dict: no 'nino' entry (a plain optimizer's state dict?); the "
                          "base state is loaded and the nowcast timeline restarts from step 0", stacklevel=2)
            self._calls = 0
        else:
            self.history.restore(nino["history"])
            self._calls = int(nino["steps_done"])
            lrs = [float(x) for x in nino.get("capture_lrs", [])]  # absent in older checkpoints: a constant rate
            filled = nino["history"].shape[0]
            lrs += [self._current_lr()] * (filled - len(lrs))
            self._capture_lrs[:filled] = lrs[:filled]
            if nino.get("lpe") is not None:
                self._graph.restore_lpe(nino["lpe"])
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _check_known(self, params: list[torch.Tensor]) -> None:
        for i, p in enumerate(params):
            if id(p) not in self._known:
                raise ValueError(f"parameter {i} of the optimizer's params (shape {tuple(p.shape)}) is not a "
                                 f"parameter of `model`: pass the model the parameters belong to")

    def __repr__(self) -> str:
        return (f"NiNoAdam(base={type(self.base).__name__}, nowcaster={self.nowcaster!r}, period={self.period}, "
                f"context={self.context}, k_schedule={self.k_schedule})")


def _check_arguments(*, max_steps, k_decay, max_horizon, history_dtype, flags: dict[str, Any]) -> None:
    """``ValueError``/``TypeError`` for arguments that would otherwise fail late or be silently misread (the base
    optimizer checks its own: lr, betas, eps, weight decay)."""
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if max_steps is not None and (not is_int(max_steps) or max_steps <= 0):
        raise ValueError(f"max_steps must be a positive integer (the planned number of optimizer steps) or None, "
                         f"got {max_steps!r}")
    if isinstance(k_decay, bool) or not isinstance(k_decay, (int, float)) or not k_decay >= 0:
        raise ValueError(f"k_decay must be a number >= 0 (0 keeps k at max_horizon), got {k_decay!r}")
    if max_horizon is not None and (not is_int(max_horizon) or max_horizon <= 0):
        raise ValueError(f"max_horizon must be a positive integer or None (the nowcaster's own), got {max_horizon!r}")
    if history_dtype is not None and (not isinstance(history_dtype, torch.dtype) or
                                      not history_dtype.is_floating_point):
        raise TypeError(f"history_dtype must be a floating-point torch.dtype (e.g. torch.float32), got "
                        f"{history_dtype!r}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")


def _make_base(params, base, *, lr, betas, eps, weight_decay, **kwargs) -> Optimizer:
    given = {k: v for k, v in (("betas", betas), ("eps", eps), ("weight_decay", weight_decay)) if v is not None}
    if isinstance(base, Optimizer):
        if params is not None:
            mine = {id(p) for group in base.param_groups for p in group["params"]}
            theirs = list(params)
            theirs = [p for item in theirs for p in (item["params"] if isinstance(item, dict) else [item])]
            if {id(p) for p in theirs} != mine:
                raise ValueError("`params` differ from the parameters of the `base` optimizer instance: "
                                 "pass params=None (or the same parameters) with a base instance")
        return base
    if params is None:
        raise ValueError("params is None: pass the parameters to optimize (or a base optimizer instance)")
    if base is None:
        return torch.optim.Adam(params, lr=lr, **given, **kwargs)
    if isinstance(base, type) and issubclass(base, Optimizer):
        return base(params, lr=lr, **given, **kwargs)
    raise TypeError(f"base must be None, a torch.optim.Optimizer subclass or instance; got {base!r}")


def _module_device(nowcaster: Any) -> torch.device | None:
    """Where a module nowcaster's parameters live; None for other nowcasters (they read the history in place)."""
    if isinstance(nowcaster, nn.Module):
        first = next(iter(nowcaster.parameters()), None)
        return None if first is None else first.device
    return None


def _full(p: torch.Tensor) -> torch.Tensor:
    """The whole parameter: a DTensor (FSDP2 shard) is gathered, anything else is returned as is."""
    return p.full_tensor() if _DTensor is not None and isinstance(p, _DTensor) else p


def _write(p: torch.Tensor, value: torch.Tensor) -> None:
    """``p.copy_(value)`` for a whole-parameter ``value`` (the same on every rank); a DTensor keeps its shard."""
    if _DTensor is not None and isinstance(p, _DTensor):
        value = _distribute_tensor(value.to(device=p.to_local().device, dtype=p.dtype), p.device_mesh,
                                   p.placements)
    p.copy_(value)


def _comm_device(device: torch.device) -> torch.device:
    """Where a tensor for the default process group's broadcast must live: CUDA for a pure NCCL group."""
    if str(dist.get_backend()) == "nccl" and device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _graph_for(model: nn.Module | None, params: list[torch.Tensor], lpe: bool
               ) -> tuple[ModelGraph, list[torch.Tensor]]:
    """The neural graph and the parameters in its flat order."""
    if model is None:
        warnings.warn("NiNoAdam: no model given; the parameters are treated as a chain in the order passed. "
                      "Pass model=... for a graph built from the model's structure.", stacklevel=3)
        graph, _ = build_chain_graph([(f"param_{i}", tuple(p.shape)) for i, p in enumerate(params)], lpe=lpe)
        return ModelGraph.of(graph), list(params)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return ModelGraph(model, lpe), [p for _, p in graph_parameters(model)]

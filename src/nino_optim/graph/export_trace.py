"""Tracing with example inputs (``torch.export``), for models that symbolic tracing cannot follow.

Hugging Face models branch on their inputs and configuration, which ``torch.fx.symbolic_trace`` cannot record.
``torch.export`` runs the forward pass on the example inputs (with fake tensors) and records ATen ops with
their shapes; ``graph/aten.py`` walks that graph with the rules of the symbolic path.
"""
from __future__ import annotations

import contextlib
import inspect

import torch
import torch.fx as fx
from torch import nn


class _Outputs(nn.Module):
    """Wraps a model so that its output is a tuple of tensors (``torch.export`` cannot return HF cache objects)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.tensors(self.model(*args, **kwargs))

    @staticmethod
    def tensors(out) -> tuple[torch.Tensor, ...]:
        """The tensors of a model's output (a tensor, a tuple, or a Hugging Face ``ModelOutput``)."""
        if isinstance(out, torch.Tensor):
            return (out,)
        values = out.values() if isinstance(out, dict) else out  # HF ModelOutput is a dict
        if not isinstance(values, (tuple, list)):
            values = list(values)
        return tuple(v for v in values if isinstance(v, torch.Tensor))


def default_example_inputs(model: nn.Module) -> tuple[tuple, dict] | None:
    """Example inputs for models that say what they take: Hugging Face models, by their ``main_input_name`` and
    configuration (token ids, images of ``image_size``, Whisper's log-mel frames; encoder-decoders also get
    decoder token ids). None for anything else."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    main = getattr(model, "main_input_name", "input_ids")
    vision = getattr(config, "vision_config", None) or config
    if main == "pixel_values" and getattr(vision, "image_size", None):
        size = vision.image_size if isinstance(vision.image_size, (tuple, list)) else (vision.image_size,) * 2
        inputs = {main: torch.zeros(1, getattr(vision, "num_channels", 3), *size)}
    elif main == "input_features" and getattr(config, "num_mel_bins", None):
        frames = 2 * getattr(config, "max_source_positions", 1500)  # Whisper's encoder wants exactly this many
        inputs = {main: torch.zeros(1, config.num_mel_bins, frames)}
    elif main == "input_ids" and getattr(config, "vocab_size", None):
        positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 8
        inputs = {main: torch.zeros(1, min(4, positions), dtype=torch.long)}
    else:
        return None
    if getattr(config, "is_encoder_decoder", False) and getattr(config, "vocab_size", None):
        inputs["decoder_input_ids"] = torch.zeros(1, 4, dtype=torch.long)
    return (), inputs


def export_graph(model: nn.Module, args: tuple, kwargs: dict) -> tuple[fx.GraphModule, dict[str, str | None]]:
    """The ATen graph of ``model`` on the example inputs, and a map placeholder name -> parameter name (None for
    the user inputs; buffers and constants are left out).

    ``make_fx`` first: it records the same pre-dispatch ATen ops as ``torch.export`` at a fraction of the cost,
    because it skips export's checks and program bookkeeping. On the real example inputs when it can (0.34 s for
    a 3.4M-parameter GPT-2 here, the first call in a process): data-dependent steps (attention-mask checks) then
    read real values and are folded away, which changes no layer. On fake tensors where the real forward fails
    (0.45-0.7 s; a model on the meta device, a private option missing from this torch), and ``torch.export``
    (1.4 s) for what ``make_fx`` cannot trace.
    """
    try:
        accepted = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        accepted = {}
    kwargs = dict(kwargs)
    if "use_cache" in accepted and "use_cache" not in kwargs:
        kwargs["use_cache"] = False
    wrapper = _Outputs(model)
    for real in (True, False):
        try:
            return _make_fx_graph(wrapper, tuple(args), kwargs, real)
        except Exception:  # noqa: BLE001 - anything this tracer cannot follow: the next, more general one
            pass
    program = torch.export.export(wrapper, tuple(args), kwargs, strict=False)
    signature = program.graph_signature
    params = {ph: fqn.removeprefix("model.") for ph, fqn in signature.inputs_to_parameters.items()}
    params.update({name: None for name in signature.user_inputs})
    return program.graph_module, params


def _make_fx_graph(wrapper: _Outputs, args: tuple, kwargs: dict,
                   real: bool) -> tuple[fx.GraphModule, dict[str, str | None]]:
    """``export_graph`` through ``make_fx``: parameters, buffers and tensor inputs become placeholders (in that
    order), everything else (flags, sizes) is closed over. ``real``: run on the real tensors (without autograd),
    else on fake copies."""
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.utils import _pytree as pytree

    model = wrapper.model
    names = [name for name, _ in model.named_parameters()]
    buffer_names = [name for name, _ in model.named_buffers()]
    leaves, spec = pytree.tree_flatten((args, kwargs))
    tensor_at = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]

    def forward(params, buffers, tensors):
        filled = list(leaves)
        for i, t in zip(tensor_at, tensors):
            filled[i] = t
        call_args, call_kwargs = pytree.tree_unflatten(filled, spec)
        state = dict(zip(names, params)) | dict(zip(buffer_names, buffers))
        return _Outputs.tensors(torch.func.functional_call(model, state, call_args, call_kwargs))

    options = {"tracing_mode": "real", "_error_on_data_dependent_ops": False} if real else {"tracing_mode": "fake"}
    with torch.no_grad() if real else contextlib.nullcontext():
        gm = make_fx(forward, pre_dispatch=True, **options)(
            [p for _, p in model.named_parameters()], [b for _, b in model.named_buffers()],
            [leaves[i] for i in tensor_at])
    placeholders = [node.name for node in gm.graph.nodes if node.op == "placeholder"]
    if len(placeholders) != len(names) + len(buffer_names) + len(tensor_at):
        raise RuntimeError("make_fx placeholders do not match the parameters, buffers and inputs")
    params = dict(zip(placeholders, names))
    params.update({name: None for name in placeholders[len(names) + len(buffer_names):]})
    return gm, params

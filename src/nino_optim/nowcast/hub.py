"""``load_nowcaster(spec)``: the front door from a spec (a name, a path, a Hub repo id) to a nowcaster.

A spec resolves in this order; names are reserved, so a local folder called ``nino_mlp`` is ``"./nino_mlp"``:

1. an object with ``predict(graph, states, k)``: returned as is;
2. ``"default"``: the project's own NiNo weights, bundled in the package (``DEFAULT_WEIGHTS``); never a request;
3. a baseline: ``"linefit"``, ``"linefit+"``;
4. an official checkpoint name (``"nino_no_posw"``, ``"nino_mlp"``, ``"nino_mlp_h32"``): downloaded once from the
   upstream repository at a pinned commit, checked against its SHA-256 and cached (``nowcast/official.py``);
5. a local path: a directory with ``config.json`` + ``model.safetensors`` (either file of one works too), or an
   official ``.pt`` file;
6. a Hugging Face Hub repo id ``"owner/name"``, at ``revision`` if given (huggingface_hub's cache,
   ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` apply).

The project's format is read by the models' own ``from_pretrained`` (``nowcast/hub_model.py``); the class comes
from ``config.json``'s ``"architecture"``. The official ``.pt`` files (a dict with ``state_dict`` and
``model_args``) load with ``torch.load(weights_only=True)``, so nothing but tensors is ever unpickled. Loading is
strict, and which source a nowcaster came from is logged at INFO level.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from .errors import NowcasterLoadError
from .gnn import NiNoGNN
from .hub_model import CONFIG_NAME, WEIGHTS_NAME, HubNowcaster, load_state_strict
from .linefit import Linefit
from .official import OFFICIAL_CHECKPOINTS, UNAVAILABLE, fetch_official
from .wnn import WNN

logger = logging.getLogger(__name__)

# The project's own NiNo weights, shipped inside the package (their model card is README.md beside them).
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "pretrained"
ARCHITECTURES: dict[str, type[HubNowcaster]] = {"nino-gnn": NiNoGNN, "wnn": WNN}
BASELINES = {"linefit": lambda: Linefit(weighted=False), "linefit+": lambda: Linefit(weighted=True)}
ACCEPTED = ("'default', 'linefit', 'linefit+', an official checkpoint name "
            f"({', '.join(map(repr, OFFICIAL_CHECKPOINTS))}), a directory with config.json + model.safetensors, "
            "an official NiNo .pt file, a Hugging Face Hub repo id ('owner/name'), "
            "or an object with predict(graph, states, k)")
_COMMIT = re.compile(r"[0-9a-f]{40}")

__all__ = ["DEFAULT_WEIGHTS", "NowcasterLoadError", "load_nowcaster", "load_official"]


def _architecture(config_path: Path) -> type[HubNowcaster]:
    """The model class ``config_path`` (a ``config.json``) names."""
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise NowcasterLoadError(f"cannot read {config_path}: {err}") from None
    arch = config.get("architecture") if isinstance(config, dict) else None
    if arch not in ARCHITECTURES:
        raise NowcasterLoadError(f"{config_path} has architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def _from_directory(directory: Path) -> HubNowcaster:
    model_cls = _architecture(directory / CONFIG_NAME)
    if not (directory / WEIGHTS_NAME).is_file():
        raise NowcasterLoadError(f"{directory} has a {CONFIG_NAME} but no {WEIGHTS_NAME}")
    return model_cls.from_pretrained(directory)


def load_official(path: str | os.PathLike) -> HubNowcaster:
    """Load an official NiNo/WNN+ checkpoint file (``nino_no_posw.pt``, ``nino_mlp.pt``, ...).

    The official GNN's last message-passing layer is never used by its output (reference section 1.4); its
    tensors are dropped here.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, not a torch file, pickled objects other than tensors
        raise NowcasterLoadError(f"cannot read {path} as an official NiNo checkpoint: {err}") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "model_args"} <= set(ckpt):
        raise NowcasterLoadError(f"{path} is not an official NiNo checkpoint (expected a dict with "
                                 f"'state_dict' and 'model_args')")
    args = dict(ckpt["model_args"])
    state = dict(ckpt["state_dict"])
    if args.get("gnn", True) in (False, None, "none"):
        config: dict[str, Any] = {"architecture": "wnn", "hid": args.get("hid", 128), "ctx": args.get("ctx", 5),
                                  "seq_len": args.get("seq_len", 40), "edge_types": args.get("edge_types", 15)}
    else:
        layers = args.get("layers", 3)
        if args.get("final_edge_update", False) or args.get("towers", 1) != 1 or not args.get("dms", True):
            raise NowcasterLoadError(f"{path}: only the released configuration (final_edge_update=False, "
                                     f"towers=1, dms=True) is supported, got {args}")
        state = {k: v for k, v in state.items() if not k.startswith(f"gnn.convs.{layers - 1}.")}
        config = {"architecture": "nino-gnn", "hid": args.get("hid", 128), "ctx": args.get("ctx", 5),
                  "seq_len": args.get("seq_len", 40), "max_feat_size": args.get("max_feat_size", 9) or 1,
                  "mp_layers": layers - 1, "edge_types": args.get("edge_types", 15), "lpe": args.get("lpe", 8),
                  "wte_pos_enc": args.get("wte_pos_enc", True), "vocab_size": args.get("vocab_size", 50257),
                  "upd_scale": args.get("upd_scale", 1.0)}
    model = ARCHITECTURES[config["architecture"]](config)
    return load_state_strict(model, state, str(path))


def _from_hub(repo_id: str, revision: str | None) -> HubNowcaster:
    from huggingface_hub import hf_hub_download

    try:
        config = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision))
    except Exception as err:
        raise NowcasterLoadError(f"cannot fetch {repo_id!r} from the Hugging Face Hub: {err}") from None
    model_cls = _architecture(config)
    # The cache keeps files under snapshots/<commit>/: load the weights at that same commit, so that a push
    # between the two downloads cannot pair this config with other weights.
    commit = config.parent.name if _COMMIT.fullmatch(config.parent.name) else revision
    try:
        return model_cls.from_pretrained(repo_id, revision=commit)
    except NowcasterLoadError:
        raise
    except Exception as err:
        raise NowcasterLoadError(f"cannot fetch {repo_id!r} from the Hugging Face Hub: {err}") from None


def load_nowcaster(spec: Any = "default", *, revision: str | None = None):
    """Turn a spec into a nowcaster (an object with ``predict(graph, states, k)``).

    Args:
        spec: ``"default"`` (the project's own NiNo weights, bundled); a baseline name (``"linefit"``,
            ``"linefit+"``); an official checkpoint name (``"nino_no_posw"``, ``"nino_mlp"``, ``"nino_mlp_h32"``);
            a directory with ``config.json`` + ``model.safetensors``; an official ``.pt`` file; a Hub repo id; or a
            nowcaster object (returned as is). The module docstring gives the order.
        revision: Hub revision (branch, tag or commit) to pin when ``spec`` is a repo id.
    Raises:
        NowcasterLoadError: the spec names weights that cannot be read, fetched or verified (the message says why
            and what to do); ValueError for a spec that names nothing; TypeError for an object without predict.
    """
    if not isinstance(spec, (str, os.PathLike)):
        if callable(getattr(spec, "predict", None)):
            return spec
        raise TypeError(f"nowcaster must be a spec or have predict(graph, states, k); got {type(spec).__name__}. "
                        f"Accepted: {ACCEPTED}")
    text = os.fspath(spec)
    if text == "default":
        if not (DEFAULT_WEIGHTS / WEIGHTS_NAME).is_file():
            raise NowcasterLoadError(f"the bundled weights are missing from {DEFAULT_WEIGHTS} (a broken install?); "
                                     f"reinstall nino-optim, or pass another nowcaster. Accepted: {ACCEPTED}")
        return _loaded(spec, _from_directory(DEFAULT_WEIGHTS), f"the bundled weights in {DEFAULT_WEIGHTS}")
    if text.lower() in BASELINES:
        return BASELINES[text.lower()]()
    if text in OFFICIAL_CHECKPOINTS:
        path = fetch_official(text)
        return _loaded(spec, load_official(path), f"the official checkpoint {path}")
    if text in UNAVAILABLE:
        raise NowcasterLoadError(f"the official checkpoint {text!r} cannot be loaded by name: {UNAVAILABLE[text]}")
    path = Path(text).expanduser()
    if path.is_dir():
        return _loaded(spec, _from_directory(path), f"the directory {path}")
    if path.is_file():
        if path.name in (WEIGHTS_NAME, CONFIG_NAME):
            return _loaded(spec, _from_directory(path.parent), f"the directory {path.parent}")
        return _loaded(spec, load_official(path), f"the official-format file {path}")
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and not path.suffix:
        return _loaded(spec, _from_hub(text, revision), f"the Hugging Face Hub repo {text}"
                       + (f" at {revision}" if revision else ""))
    raise ValueError(f"unknown nowcaster spec {text!r}: no such file or directory. Accepted: {ACCEPTED}")


def _loaded(spec: Any, model: HubNowcaster, source: str) -> HubNowcaster:
    logger.info("nowcaster %r: %s from %s", os.fspath(spec), type(model).__name__, source)
    return model

"""Loading and saving nowcasters: ``load_nowcaster(spec)``, ``save_pretrained``, ``push_to_hub``.

The project's own format is a directory (or Hub repo) holding ``config.json`` + ``model.safetensors``, the
Hugging Face convention. The official ``.pt`` files (a dict with ``state_dict`` and ``model_args``) load with
``torch.load(weights_only=True)``, so nothing but tensors is ever unpickled. Loading is strict: a missing,
unexpected or wrongly shaped tensor raises ``NowcasterLoadError`` and no model is returned half-loaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .gnn import NiNoConfig, NiNoGNN
from .linefit import Linefit
from .wnn import WNN, WNNConfig

# The project's own NiNo weights, shipped inside the package (their model card is README.md beside them).
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "pretrained"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BASELINES = {"linefit": lambda: Linefit(weighted=False), "linefit+": lambda: Linefit(weighted=True)}
ACCEPTED = ("'default', 'linefit', 'linefit+', a directory with config.json + model.safetensors, "
            "an official NiNo .pt file, a Hugging Face Hub repo id ('owner/name'), "
            "or an object with predict(graph, states, k)")


class NowcasterLoadError(ValueError):
    """Weights or configuration that cannot be turned into a nowcaster."""


def _build(config: dict) -> nn.Module:
    config = dict(config)
    arch = config.pop("architecture", None)
    classes = {"nino-gnn": (NiNoGNN, NiNoConfig), "wnn": (WNN, WNNConfig)}
    if arch not in classes:
        raise NowcasterLoadError(f"config.json has architecture {arch!r}; expected one of {sorted(classes)}")
    model_cls, config_cls = classes[arch]
    try:
        return model_cls(config_cls(**config))
    except TypeError as err:
        raise NowcasterLoadError(f"config.json does not describe a {arch} model: {err}") from None


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> nn.Module:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [f"{k}: {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
             for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else "",
                 f"wrong shapes {wrong}" if wrong else ""]
        raise NowcasterLoadError(f"{source} does not match the model: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def load_official(path: str | os.PathLike) -> nn.Module:
    """Load an official NiNo/WNN+ checkpoint (``nino_no_posw.pt``, ``nino_mlp.pt``, ...).

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
    return _load_strict(_build(config), state, str(path))


def load_pretrained(directory: str | os.PathLike) -> nn.Module:
    """Load the project's format: ``config.json`` + ``model.safetensors`` in ``directory``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise NowcasterLoadError(f"cannot read {directory / CONFIG_NAME}: {err}") from None
    model = _build(config)
    try:
        state = load_file(directory / WEIGHTS_NAME)
    except (OSError, SafetensorError) as err:
        raise NowcasterLoadError(f"cannot read {directory / WEIGHTS_NAME}: {err}") from None
    return _load_strict(model, state, str(directory / WEIGHTS_NAME))


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` for a ``NiNoGNN`` or ``WNN`` into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, directory / WEIGHTS_NAME)
    return directory


def push_to_hub(model: nn.Module, repo_id: str, *, token: str | None = None, revision: str | None = None,
                private: bool = False, card: str | os.PathLike | None = None) -> str:
    """Publish ``config.json`` + ``model.safetensors`` to a Hugging Face Hub repo (``HF_ENDPOINT`` honoured),
    with ``card`` (a markdown file, e.g. the bundled weights' ``DEFAULT_WEIGHTS / "README.md"``) as its model card.
    Returns the commit URL."""
    import shutil
    import tempfile

    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        if card is not None:
            shutil.copyfile(card, Path(tmp) / "README.md")
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision,
                                 commit_message="Upload NiNo nowcaster")
    return str(info)


def _from_hub(repo_id: str, revision: str | None) -> nn.Module:
    from huggingface_hub import hf_hub_download

    try:
        config = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision))
        # The cache keeps files under snapshots/<commit>/: fetch the weights at that same commit, so that a push
        # between the two downloads cannot pair this config with other weights.
        hf_hub_download(repo_id, WEIGHTS_NAME, revision=config.parent.name)
    except Exception as err:
        raise NowcasterLoadError(f"cannot fetch {repo_id!r} from the Hugging Face Hub: {err}") from None
    return load_pretrained(config.parent)


def load_nowcaster(spec: Any = "default", *, revision: str | None = None):
    """Turn a spec into a nowcaster (an object with ``predict(graph, states, k)``).

    Args:
        spec: ``"default"`` (the project's own NiNo weights, bundled); a baseline name (``"linefit"``,
            ``"linefit+"``); a directory with ``config.json`` + ``model.safetensors``; an official ``.pt`` file; a
            Hub repo id; or a nowcaster object (returned as is).
        revision: Hub revision (branch, tag or commit) to pin when ``spec`` is a repo id.
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
        return load_pretrained(DEFAULT_WEIGHTS)
    if text.lower() in BASELINES:
        return BASELINES[text.lower()]()
    path = Path(text).expanduser()
    if path.is_dir():
        return load_pretrained(path)
    if path.is_file():
        if path.name == WEIGHTS_NAME or path.name == CONFIG_NAME:
            return load_pretrained(path.parent)
        return load_official(path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and not path.suffix:
        return _from_hub(text, revision)
    raise ValueError(f"unknown nowcaster spec {text!r}: no such file or directory. Accepted: {ACCEPTED}")

"""Nowcaster models as Hugging Face Hub models: ``from_pretrained``, ``save_pretrained``, ``push_to_hub``.

``HubNowcaster`` is the base of the NiNo GNN and WNN+: ``huggingface_hub.PyTorchModelHubMixin`` provides the Hub
interface, and this class fixes the files it reads and writes to the project's format:

- ``config.json``: the model's config dataclass as JSON plus an ``"architecture"`` key (``"nino-gnn"``, ``"wnn"``),
  which is how ``load_nowcaster`` picks the class for a directory or repo without being told;
- ``model.safetensors``: the state dict under its own names;
- ``README.md``: a model card (a template filled with the configuration, or a markdown file given as ``card``).

Loading is strict: a missing, unexpected or wrongly shaped tensor raises ``NowcasterLoadError`` and no model is
returned half-loaded (the mixin's own default is lenient).
"""
from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin, hf_hub_download
from torch import nn

from .errors import NowcasterLoadError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PAPER_URL = "https://arxiv.org/abs/2409.04434"

# Jinja template of the card written beside the weights (``push_to_hub``, ``save_pretrained``).
MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_class }} nowcaster for nino-optim

A `{{ architecture }}` nowcaster ({{ parameters }} parameters) for the `nino-optim` library. Given the last
{{ ctx }} states of a model's parameters, it predicts them up to {{ seq_len }} state spacings ahead; `NiNoAdam`
applies such a prediction every `period` steps of its base optimizer. Method: "Accelerating Training with Neuron
Interaction and Nowcasting Networks" (ICLR 2025, {{ paper }}).

## Use

```python
from nino_optim import NiNoAdam, load_nowcaster

nowcaster = load_nowcaster("{{ repo_id | default("<owner>/<name>", true) }}")
opt = NiNoAdam(model.parameters(), model=model, nowcaster=nowcaster)
```

`nino_optim.nowcast.{{ model_class }}.from_pretrained(...)` loads it as well.

## Configuration

```json
{{ config_json }}
```
"""


def load_state_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Copy ``state_dict`` into ``model`` only if the names and shapes match exactly; return it in eval mode.

    Raises:
        NowcasterLoadError: naming the missing, unexpected and wrongly shaped tensors of ``source``.
    """
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


class HubNowcaster(nn.Module, PyTorchModelHubMixin, library_name="nino-optim", license="mit",
                   tags=["nino-optim", "nowcasting", "learning-to-optimize"], model_card_template=MODEL_CARD_TEMPLATE):
    """Base of the nowcasters with weights. Subclasses set ``architecture`` (the ``config.json`` tag) and
    ``config_class`` (a dataclass with ``to_dict()``), take ``config`` as their first ``__init__`` argument and
    turn it into a config with ``coerce_config``."""

    architecture: ClassVar[str]
    config_class: ClassVar[type]

    @classmethod
    def coerce_config(cls, config: Any) -> Any:
        """``None`` (defaults), a ``config_class`` instance, or the dict read from ``config.json`` -> a
        ``config_class`` instance. ``from_pretrained`` hands the dict over as it was read.

        Raises:
            NowcasterLoadError: the dict describes another architecture or has keys the config does not know.
        """
        if config is None:
            return cls.config_class()
        if isinstance(config, cls.config_class):
            return config
        if not isinstance(config, dict):
            raise TypeError(f"config must be a {cls.config_class.__name__}, a dict or None, "
                            f"got {type(config).__name__}")
        data = dict(config)
        architecture = data.pop("architecture", cls.architecture)
        if architecture != cls.architecture:
            raise NowcasterLoadError(f"the configuration describes a {architecture!r} model, not a {cls.__name__} "
                                     f"({cls.architecture!r}); load it with nino_optim.load_nowcaster, which picks "
                                     f"the class from config.json")
        known = {f.name for f in fields(cls.config_class)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NowcasterLoadError(f"the configuration has keys {unknown} that {cls.config_class.__name__} does not "
                                     f"know (it takes {sorted(known)}); were these weights saved by another version?")
        return cls.config_class(**data)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (the mixin then adds the model card).

        Writing ``config.json`` here, rather than letting the mixin serialise the ``__init__`` arguments, keeps the
        ``"architecture"`` key and leaves out run-time settings such as ``chunk_size``."""
        from safetensors.torch import save_file

        config = self.config.to_dict()
        (save_directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, save_directory / WEIGHTS_NAME, metadata={"format": "pt"})

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         map_location: str | torch.device = "cpu", strict: bool = True,
                         proxies: dict | None = None, resume_download: bool | None = None, **model_kwargs):
        """Build the model from ``config.json`` (``model_kwargs["config"]``, as ``from_pretrained`` read it) and
        load ``model.safetensors`` from the directory or Hub repo ``model_id`` into it, strictly unless
        ``strict=False``. ``proxies`` and ``resume_download`` are what huggingface_hub before 1.0 passes along;
        the first is forwarded where given, the second has no effect."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if model_kwargs.get("config") is None:
            raise NowcasterLoadError(f"{model_id} has no readable {CONFIG_NAME}: save the model with save_pretrained, "
                                     f"or pass config=<a {cls.config_class.__name__}> to from_pretrained")
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_NAME
        else:
            extra = {"proxies": proxies} if proxies else {}
            weights = Path(hf_hub_download(model_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir,
                                           force_download=force_download, token=token,
                                           local_files_only=local_files_only, **extra))
        try:
            state = load_file(weights)
        except (OSError, SafetensorError) as err:
            raise NowcasterLoadError(f"cannot read {weights}: {err}") from None
        if strict:
            load_state_strict(model, state, str(weights))
        else:
            model.load_state_dict(state, strict=False)
        return model.to(map_location).eval()

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs) -> str:
        """``PyTorchModelHubMixin.push_to_hub``, with the repo id written into the generated model card's usage
        line. ``model_card_kwargs={"card": path}`` publishes the markdown file at ``path`` as the card instead.
        Returns the commit URL."""
        return super().push_to_hub(repo_id, model_card_kwargs={"repo_id": repo_id, **(model_card_kwargs or {})},
                                   **kwargs)

    def generate_model_card(self, *args, card: str | os.PathLike | None = None, **kwargs) -> ModelCard:
        """The model card: the markdown file ``card`` when given (its metadata and text are kept; the YAML header
        is re-serialised), else the template filled with this model's configuration."""
        if card is not None:
            return ModelCard(Path(card).read_text(encoding="utf-8"))
        config = self.config.to_dict()
        # The paper goes in as ``paper`` (the mixin's own ``paper_url`` class option is missing from older
        # huggingface_hub versions).
        return super().generate_model_card(
            *args, model_class=type(self).__name__, architecture=self.architecture, paper=PAPER_URL,
            ctx=config.get("ctx"), seq_len=config.get("seq_len"),
            parameters=f"{sum(p.numel() for p in self.parameters()):,}", config_json=json.dumps(config, indent=2),
            **kwargs)


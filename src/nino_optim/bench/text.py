"""The King James Bible as bytes, offline, for the benchmark's language-model task.

The text comes from the Debian package ``bible-kjv`` (its ``bible`` program prints every verse, one per line,
as ``Ge1:1 In the beginning ...``; the reference prefix is dropped). Every 20th verse (index 19, 39, ...) is
held out for validation, so both splits cover the whole book. Tokens are bytes (vocabulary 256): no tokenizer
to install or download. This text is the benchmark's, so meta-training must not use it: the zoo's language
models train on ``load_pydoc_topics()``, CPython's own help texts, which every Python installation carries.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

NAME = "kjv"
HOLD_OUT_EVERY = 20
ALL_VERSES = "gen1:1-rev22:21"
TEXT_ENV = "NINO_KJV_TEXT"


class TextMissingError(FileNotFoundError):
    """The ``bible`` program of the Debian package bible-kjv is not installed."""


@dataclass
class TextData:
    """Byte tokens: ``train`` and ``val`` are uint8 tensors [n] of UTF-8 text, verses joined by newlines."""

    name: str
    train: torch.Tensor
    val: torch.Tensor


def split_verses(lines: list[str], hold_out_every: int = HOLD_OUT_EVERY) -> tuple[str, str]:
    """(train text, validation text): every ``hold_out_every``-th verse goes to validation."""
    verses = [line.split(" ", 1)[1] if " " in line else line for line in lines if line.strip()]
    val = [v for i, v in enumerate(verses) if i % hold_out_every == hold_out_every - 1]
    train = [v for i, v in enumerate(verses) if i % hold_out_every != hold_out_every - 1]
    return "\n".join(train) + "\n", "\n".join(val) + "\n"


def _bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def load_kjv() -> TextData:
    """The King James Bible (31,102 verses, ~4.4 MB), split into train and validation bytes.

    Where the ``bible`` program cannot be installed (a machine without package registries), ``$NINO_KJV_TEXT``
    may name a file holding its output: ``bible -f gen1:1-rev22:21 > kjv.txt``.
    """
    if os.environ.get(TEXT_ENV):
        train, val = split_verses(Path(os.environ[TEXT_ENV]).read_text().splitlines())
        return TextData(NAME, _bytes(train), _bytes(val))
    program = shutil.which("bible")
    if program is None:
        raise TextMissingError("the benchmark's text is the King James Bible of the Debian package bible-kjv; "
                               "install it offline with `sudo apt-get install bible-kjv` (it provides `bible`)")
    out = subprocess.run([program, "-f", ALL_VERSES], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         check=True).stdout
    train, val = split_verses(out.splitlines())
    return TextData(NAME, _bytes(train), _bytes(val))


def load_pydoc_topics() -> TextData:
    """CPython's ``pydoc`` help topics (``pydoc_data.topics``: ~0.46 MB of English about Python), as bytes.

    Topics are joined in name order and every 20th paragraph is held out for validation. The text differs
    slightly between Python versions; the meta-training data records which one it used.
    """
    from pydoc_data.topics import topics

    paragraphs = [p for name in sorted(topics) for p in topics[name].split("\n\n") if p.strip()]
    val = [p for i, p in enumerate(paragraphs) if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1]
    train = [p for i, p in enumerate(paragraphs) if i % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1]
    return TextData("pydoc-topics", _bytes("\n\n".join(train)), _bytes("\n\n".join(val)))

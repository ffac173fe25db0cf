"""The official NiNo checkpoints by name: where they come from, what their bytes must hash to, where they are cached.

``load_nowcaster("nino_no_posw")`` (or ``"nino_mlp"``, ``"nino_mlp_h32"``) calls ``fetch_official``, which returns
the cached file or downloads it once from the upstream repository (SamsungSAILMontreal/nino, MIT license), each
file at a pinned commit. Every file is checked against its SHA-256 before use, cached or not, so a mirror, a proxy
or a truncated transfer can never hand the loader other bytes. The loader itself is ``hub.load_official``
(``torch.load(weights_only=True)``).

Environment:
    ``NINO_CACHE``: the cache root (default ``$XDG_CACHE_HOME/nino_optim``, else ``~/.cache/nino_optim``); the
        files live in its ``official/`` folder.
    ``NINO_OFFICIAL_URL``: base URL the files are fetched from, as ``<base>/<file>`` (default: the raw files of
        the upstream repository, each at its commit in ``OFFICIAL_CHECKPOINTS``). A mirror, or a local server.
    ``NINO_OFFLINE``, ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``: any of them true (1/on/yes/true) -> never
        download; only cached files are used.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import NowcasterLoadError

OFFICIAL_REPO = "SamsungSAILMontreal/nino"
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/checkpoints/{filename}"
URL_ENV, CACHE_ENV = "NINO_OFFICIAL_URL", "NINO_CACHE"
OFFLINE_ENVS = ("NINO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class OfficialCheckpoint:
    """One released file: its name in ``checkpoints/``, SHA-256 and size of its bytes, the upstream commit it is
    downloaded at, and what it holds."""

    filename: str
    sha256: str
    size: int
    commit: str
    description: str


# Each file is pinned to an upstream commit that holds it (for the WNN+ pair, the commit that renamed the hidden-32
# model to nino_mlp_h32.pt and added the hidden-128 nino_mlp.pt). The hashes are those of the copies the reference
# implementation was checked against; they, not the commits, decide what is accepted.
OFFICIAL_CHECKPOINTS = {
    "nino_no_posw": OfficialCheckpoint(
        "nino_no_posw.pt", "2e2186e4a0e50193080eb9074648786ef25cd5ac3149a7df790127fe41101620", 2_215_116,
        "2aefecc5e5775a363f1cef614760747b9b6e3299", "NiNo GNN, hidden 128, no token-id features (any vocabulary)"),
    "nino_mlp": OfficialCheckpoint(
        "nino_mlp.pt", "34d9ff3703274fa07615e27937dac8ea07f375ed95b5bde6d39abd8c41c06f52", 233_551,
        "bcef3d5e159ecd66bb195824da2f7a33c04ec07b", "WNN+ (per-parameter MLP, no graph), hidden 128"),
    "nino_mlp_h32": OfficialCheckpoint(
        "nino_mlp_h32.pt", "389e4d51e79a72bb9d780812504c98146073cc2a96da38be3b72d8abe0b6fd7d", 24_580,
        "bcef3d5e159ecd66bb195824da2f7a33c04ec07b", "WNN+, hidden 32"),
}

# Released names that cannot be fetched by name, and why; ``load_nowcaster`` says so instead of "unknown spec".
UNAVAILABLE = {
    "nino": "the official default (GPT-2 token-id features, which NiNoGNN supports) has no copy whose SHA-256 this "
            "library could pin; download checkpoints/nino.pt yourself and pass its path",
    "nino_h32": "no copy whose SHA-256 this library could pin; download checkpoints/nino_h32.pt yourself and pass its "
                "path",
    "nino_towers4": "its 4-tower message passing is not implemented here (reference section 1.5)",
}


class OfficialDownloadError(NowcasterLoadError):
    """An official checkpoint that is neither cached nor downloadable (offline, network, server or hash)."""


def cache_dir() -> Path:
    """``$NINO_CACHE/official``, else ``$XDG_CACHE_HOME/nino_optim/official``, else ``~/.cache/nino_optim/official``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nino_optim"
    return Path(root).expanduser() / "official"


def official_url(name: str) -> str:
    """Where ``name``'s file is downloaded from: ``$NINO_OFFICIAL_URL/<file>``, else the raw file in the upstream
    repository at its pinned commit."""
    ckpt = _checkpoint(name)
    base = os.environ.get(URL_ENV)
    if base:
        return f"{base.rstrip('/')}/{ckpt.filename}"
    return RAW_URL.format(repo=OFFICIAL_REPO, commit=ckpt.commit, filename=ckpt.filename)


def offline_reason() -> str | None:
    """The variable that forbids downloads (``"HF_HUB_OFFLINE=1"``), or None when downloads are allowed."""
    for var in OFFLINE_ENVS:
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return f"{var}={os.environ[var]}"
    try:  # huggingface_hub reads HF_HUB_OFFLINE once, at import; a value set (or patched) there counts as well
        from huggingface_hub import constants
    except ImportError:
        return None
    return "huggingface_hub offline mode" if getattr(constants, "HF_HUB_OFFLINE", False) else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_official(name: str) -> Path:
    """Path of the verified official checkpoint ``name`` (a key of ``OFFICIAL_CHECKPOINTS``), downloaded on first use.

    A cached file is used only if its SHA-256 matches (no request is made); otherwise the file is downloaded into
    a temporary file beside the cache entry, hashed while it streams, and moved into place only if it matches.

    Raises:
        OfficialDownloadError: offline with no valid cached copy, the download failed, or its hash is wrong; the
            message gives the URL to fetch the file from and the path to put it at by hand.
    """
    ckpt = _checkpoint(name)
    path = cache_dir() / ckpt.filename
    url = official_url(name)
    by_hand = f"Download {url} and put it at {path} (expected SHA-256 {ckpt.sha256}), or pass a file's path instead."
    stale = None
    if path.is_file():
        got = sha256_of(path)
        if got == ckpt.sha256:
            return path
        stale = f"the cached {path} has SHA-256 {got}, not {ckpt.sha256}"
    reason = offline_reason()
    if reason is not None:
        what = stale or f"{path} is not cached"
        raise OfficialDownloadError(f"official checkpoint {name!r}: {what}, and downloads are off ({reason}). "
                                    f"{by_hand}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OfficialDownloadError(f"official checkpoint {name!r}: cannot create the cache folder {path.parent} "
                                    f"({err}); set {CACHE_ENV} to a writable folder. {by_hand}") from None
    _download(url, path, ckpt, f"official checkpoint {name!r}", by_hand)
    return path


def _checkpoint(name: str) -> OfficialCheckpoint:
    if name not in OFFICIAL_CHECKPOINTS:
        why = f" ({UNAVAILABLE[name]})" if name in UNAVAILABLE else ""
        raise NowcasterLoadError(f"{name!r} is not an official checkpoint available by name{why}; "
                                 f"available: {sorted(OFFICIAL_CHECKPOINTS)}")
    return OFFICIAL_CHECKPOINTS[name]


def _download(url: str, path: Path, ckpt: OfficialCheckpoint, what: str, by_hand: str) -> None:
    """Stream ``url`` into a temporary file in ``path``'s folder; ``os.replace`` it onto ``path`` if the bytes hash
    to ``ckpt.sha256``. The temporary file never outlives a failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{ckpt.filename}.", suffix=".part")
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "nino-optim"})
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        size += len(block)
                        if size > ckpt.size:  # a wrong or endless answer: stop before it fills the disk
                            break
                        digest.update(block)
                        out.write(block)
            except urllib.error.HTTPError as err:
                raise OfficialDownloadError(f"{what}: {url} answered HTTP {err.code} ({err.reason}). "
                                            f"{by_hand}") from None
            except (urllib.error.URLError, OSError) as err:  # no route, refused, DNS, timeout, reset
                reason = getattr(err, "reason", err)
                raise OfficialDownloadError(f"{what}: cannot download {url} ({reason}). {by_hand}") from None
            except ValueError as err:  # not a URL urllib can fetch
                raise OfficialDownloadError(f"{what}: cannot download {url} ({err}); check {URL_ENV}. "
                                            f"{by_hand}") from None
        got = digest.hexdigest()
        if size != ckpt.size or got != ckpt.sha256:
            got_text = f"more than {ckpt.size} bytes" if size > ckpt.size else f"{size} bytes with SHA-256 {got}"
            raise OfficialDownloadError(f"{what}: {url} sent {got_text}, expected {ckpt.size} bytes with SHA-256 "
                                        f"{ckpt.sha256}; refused and not cached. {by_hand}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

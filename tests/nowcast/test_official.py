"""Official checkpoints by name (``load_nowcaster("nino_no_posw")``): download, SHA-256 check, cache, offline use.

Downloads come from a static file server on 127.0.0.1 (``NINO_OFFICIAL_URL``) that serves copies of the reference
checkpoints; ``urllib.request.urlopen`` is wrapped so that any other host fails the test. Never the internet.
"""
from __future__ import annotations

import functools
import re
import shutil
import socket
import threading
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from conftest import official_checkpoint
from nino_optim import NowcasterLoadError, load_nowcaster
from nino_optim.nowcast import WNN, NiNoGNN, official
from nino_optim.nowcast.official import OFFICIAL_CHECKPOINTS, OfficialDownloadError

NAMES = sorted(OFFICIAL_CHECKPOINTS)


class QuietFileHandler(SimpleHTTPRequestHandler):
    """Static files; every request is recorded on ``server.log`` as ``(method, path)``."""

    def log_message(self, format, *args):  # noqa: A002 - keep pytest output clean
        pass

    def send_head(self):
        with self.server.lock:
            self.server.log.append((self.command, self.path))
        return super().send_head()


@pytest.fixture
def served(tmp_path):
    """The folder the local server serves as ``/checkpoints/``, empty."""
    folder = tmp_path / "served" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def reference_files(served):
    """Copies of the reference checkpoints in ``served`` (skips when the reference files are absent)."""
    for ckpt in OFFICIAL_CHECKPOINTS.values():
        shutil.copyfile(official_checkpoint(ckpt.filename), served / ckpt.filename)
    return served


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache root in ``tmp_path``, downloads allowed, only 127.0.0.1 reachable through urllib."""
    import huggingface_hub.constants

    monkeypatch.setenv("NINO_CACHE", str(tmp_path / "cache"))
    for var in (*official.OFFLINE_ENVS, "http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    real_urlopen = urllib.request.urlopen

    def local_only(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
            raise AssertionError(f"test tried to leave the machine: {url}")
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)
    return tmp_path / "cache" / "official"


@pytest.fixture
def server(served, cache, monkeypatch):
    """A file server for ``served``'s parent on 127.0.0.1, set as ``NINO_OFFICIAL_URL``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietFileHandler, directory=str(served.parent)))
    httpd.daemon_threads = True
    httpd.log, httpd.lock = [], threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    # A trailing slash, as people write base URLs: it must not double the separator.
    monkeypatch.setenv("NINO_OFFICIAL_URL", f"http://127.0.0.1:{httpd.server_address[1]}/checkpoints/")
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("name", NAMES)
def test_download_once_then_cache_hit(server, reference_files, cache, name):
    ckpt = OFFICIAL_CHECKPOINTS[name]
    model = load_nowcaster(name)
    assert server.log == [("GET", f"/checkpoints/{ckpt.filename}")]
    assert _leftovers(cache) == [ckpt.filename]  # the file, and no temporary file beside it
    assert official.sha256_of(cache / ckpt.filename) == ckpt.sha256
    reference = load_nowcaster(official_checkpoint(ckpt.filename))
    assert type(model) is type(reference) and model.config == reference.config and _same_weights(model, reference)
    if name == "nino_no_posw":
        assert isinstance(model, NiNoGNN) and model.config.mp_layers == 2 and not model.config.wte_pos_enc
    else:
        assert isinstance(model, WNN) and model.config.hid == (32 if name.endswith("h32") else 128)

    again = load_nowcaster(name)
    assert len(server.log) == 1  # served from the cache: no request
    assert _same_weights(again, model)


def test_wrong_hash_is_refused_and_not_cached(server, served, cache):
    path = served / "nino_mlp_h32.pt"
    data = bytes(range(256)) * 96 + bytes(4)  # the expected size (24,580 bytes), other bytes
    path.write_bytes(data)
    with pytest.raises(OfficialDownloadError, match="SHA-256") as info:
        load_nowcaster("nino_mlp_h32")
    message = str(info.value)
    assert "refused and not cached" in message
    assert str(cache / "nino_mlp_h32.pt") in message and official.official_url("nino_mlp_h32") in message
    assert _leftovers(cache) == []

    path.write_bytes(data * 2)  # too long: cut off at the expected size
    with pytest.raises(OfficialDownloadError, match="more than 24580 bytes"):
        load_nowcaster("nino_mlp_h32")
    assert _leftovers(cache) == []


@pytest.mark.parametrize("var", ["NINO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_says_where_to_put_the_file(server, cache, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    with pytest.raises(OfficialDownloadError) as info:
        load_nowcaster("nino_no_posw")
    message = str(info.value)
    assert f"{var}=1" in message and "is not cached" in message
    assert f"put it at {cache / 'nino_no_posw.pt'}" in message
    assert f"Download {official.official_url('nino_no_posw')}" in message
    assert server.log == [] and _leftovers(cache) == []


def test_offline_uses_a_valid_cached_file(server, reference_files, cache, monkeypatch):
    load_nowcaster("nino_mlp")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert isinstance(load_nowcaster("nino_mlp"), WNN)
    assert len(server.log) == 1


def test_server_404_says_where_to_get_the_file(server, cache):  # the server's folder is empty
    with pytest.raises(OfficialDownloadError, match="HTTP 404") as info:
        load_nowcaster("nino_mlp")
    assert official.official_url("nino_mlp") in str(info.value) and str(cache / "nino_mlp.pt") in str(info.value)
    assert server.log == [("GET", "/checkpoints/nino_mlp.pt")] and _leftovers(cache) == []


def test_unreachable_server(cache, monkeypatch):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NINO_OFFICIAL_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(OfficialDownloadError, match="cannot download") as info:
        load_nowcaster("nino_mlp")
    assert str(cache / "nino_mlp.pt") in str(info.value)
    assert _leftovers(cache) == []


def test_a_corrupt_cached_file_is_refused_offline(server, cache, monkeypatch):
    cache.mkdir(parents=True)
    (cache / "nino_mlp_h32.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("NINO_OFFLINE", "true")
    with pytest.raises(OfficialDownloadError, match="has SHA-256 [0-9a-f]{64}, not 389e4d51"):
        load_nowcaster("nino_mlp_h32")
    assert server.log == []


def test_a_corrupt_cached_file_is_replaced_online(server, reference_files, cache):
    cache.mkdir(parents=True)
    (cache / "nino_mlp_h32.pt").write_bytes(b"not a checkpoint")
    assert isinstance(load_nowcaster("nino_mlp_h32"), WNN)
    assert len(server.log) == 1 and _leftovers(cache) == ["nino_mlp_h32.pt"]
    assert official.sha256_of(cache / "nino_mlp_h32.pt") == OFFICIAL_CHECKPOINTS["nino_mlp_h32"].sha256


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("NINO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert official.cache_dir() == tmp_path / "xdg" / "nino_optim" / "official"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert official.cache_dir() == tmp_path / "home" / ".cache" / "nino_optim" / "official"
    monkeypatch.setenv("NINO_CACHE", str(tmp_path / "mine"))
    assert official.cache_dir() == tmp_path / "mine" / "official"


@pytest.mark.parametrize("name", NAMES)
def test_default_url_pins_a_full_upstream_commit(monkeypatch, name):
    monkeypatch.delenv("NINO_OFFICIAL_URL", raising=False)
    url = official.official_url(name)
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/SamsungSAILMontreal/nino/[0-9a-f]{40}/checkpoints/"
                        + re.escape(OFFICIAL_CHECKPOINTS[name].filename), url)


@pytest.mark.parametrize("name", NAMES)
def test_pinned_hashes_are_those_of_the_reference_files(name):
    ckpt = OFFICIAL_CHECKPOINTS[name]
    path = official_checkpoint(ckpt.filename)
    assert official.sha256_of(path) == ckpt.sha256 and path.stat().st_size == ckpt.size


def test_unknown_official_name_lists_the_available_ones():
    with pytest.raises(NowcasterLoadError, match="nino_mlp_h32"):
        official.fetch_official("nino_mlp_h64")

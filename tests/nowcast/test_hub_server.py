"""The Hub models' ``push_to_hub`` / ``from_pretrained`` and ``load_nowcaster("owner/name")`` against a local fake
Hugging Face Hub.

The fake Hub is a ``ThreadingHTTPServer`` on 127.0.0.1 that implements only the routes huggingface_hub 2.4.0 calls for
``HfApi.create_repo``, ``HfApi.upload_folder`` (regular, non-LFS files) and ``hf_hub_download``. huggingface_hub is
pointed at it through ``HF_ENDPOINT``; its cache lives in ``tmp_path`` and its shared HTTP client refuses any host but
127.0.0.1, so nothing can leave the machine.

What this relies on in huggingface_hub, all public: ``get_session``/``close_session`` (the shared ``httpx2.Client``,
whose request hooks get the local-only guard) and the module ``huggingface_hub.constants``, whose values
(``ENDPOINT``, ``HUGGINGFACE_CO_URL_TEMPLATE``, ``HF_HUB_CACHE``, ...) are read from the environment once, at import,
and so are patched as well as the environment. Those names and the fake's routes are those of huggingface_hub 2.4.0;
``monkeypatch.setattr`` fails loudly if a later version renames a constant.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest
import torch

from nino_optim import NowcasterLoadError, build_neural_graph, load_nowcaster
from nino_optim.nowcast import WNN, NiNoConfig, NiNoGNN, WNNConfig
from nino_optim.nowcast import hub as nowcast_hub

TOKEN = "hf_dummy"
REPO = r"(?P<repo>[^/]+/[^/]+)"


class FakeHubHandler(BaseHTTPRequestHandler):
    """Just enough of the Hugging Face Hub HTTP API for ``create_repo``, ``upload_folder`` and ``hf_hub_download``.

    State lives on the server object: ``server.repos[repo_id] = {"refs": {branch: sha}, "commits": {sha: {path:
    bytes}}}``, ``server.commits`` lists ``(repo_id, branch, sha, [uploaded paths])`` in order and ``server.log``
    holds ``(method, path, authorization)`` of every request. Routes (as called by huggingface_hub 2.4.0):

    - ``POST /api/repos/create``: JSON ``{"name", "organization", ...}`` -> ``{"url"}``; 409 (also with ``url``) if
      the repo exists, which ``create_repo(exist_ok=True)`` accepts.
    - ``POST /api/models/{repo}/preupload/{revision}``: ``{"files": [{"path", "sample", "size"}]}`` -> every file
      ``uploadMode: "regular"`` (so no LFS upload follows).
    - ``POST /api/models/{repo}/commit/{revision}``: NDJSON, a ``{"key": "header"}`` line then one ``{"key": "file",
      "value": {"path", "content", "encoding": "base64"}}`` line per file -> ``{"commitOid", "commitUrl"}``.
    - ``HEAD``/``GET /{repo}/resolve/{revision}/{filename}``: the file, with ``ETag`` (git blob sha1),
      ``X-Repo-Commit`` and ``Content-Length``; errors carry ``X-Error-Code`` (``RepoNotFound``,
      ``RevisionNotFound``, ``EntryNotFound``) as the real Hub's do.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - keep pytest output clean
        pass

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict | None = None) -> None:
        extra = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}
        self._json(status, {"error": message}, extra)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self) -> str:
        path = urlsplit(self.path).path
        with self.server.lock:
            self.server.log.append((self.command, path, self.headers.get("Authorization")))
        return path

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {TOKEN}":
            return True
        self._error(401, None, "Invalid credentials in Authorization header")
        return False

    def _resolve(self, repo_id: str, revision: str):
        """(repo, commit sha) of a branch name or commit sha, or None after answering the 404."""
        repo = self.server.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        sha = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
        if sha is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
            return None
        return repo, sha

    # -- routes -----------------------------------------------------------------------------------------------------
    def do_POST(self):
        path, body = self._record(), self._body()
        if not self._authorized():
            return
        if path == "/api/repos/create":
            return self._create_repo(json.loads(body))
        if path == "/api/validate-yaml":  # a model card's metadata is checked before it is committed
            return self._json(200, {"errors": [], "warnings": []}) if json.loads(body).get("content") else \
                self._error(400, None, "no YAML content")
        if m := re.fullmatch(rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", path):
            if self._resolve(m["repo"], unquote(m["rev"])) is not None:
                files = json.loads(body)["files"]
                self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                           for f in files]})
            return
        if m := re.fullmatch(rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", path):
            return self._commit(m["repo"], unquote(m["rev"]), body)
        self._error(404, None, f"no route POST {path}")

    def _create_repo(self, payload: dict) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.server.url}/{repo_id}"
        with self.server.lock:
            if repo_id in self.server.repos:  # the real Hub's 409 carries the url too: exist_ok=True reads it
                message = "You already created this model repo"
                return self._json(409, {"error": message, "url": url}, {"X-Error-Message": message})
            initial = hashlib.sha1(f"initial commit of {repo_id}".encode()).hexdigest()
            self.server.repos[repo_id] = {"refs": {"main": initial}, "commits": {initial: {}}}
        self._json(200, {"url": url, "name": repo_id})

    def _commit(self, repo_id: str, branch: str, body: bytes) -> None:
        if self.headers.get("Content-Type") != "application/x-ndjson":
            return self._error(400, None, f"expected NDJSON, got {self.headers.get('Content-Type')}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return self._error(400, None, "the first NDJSON line must be the commit header")
        added = {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] != "file" or value.get("encoding") != "base64":  # no LFS, no deletions in this fake
                return self._error(400, None, f"unsupported commit operation {line['key']!r}")
            added[value["path"]] = base64.b64decode(value["content"])
        with self.server.lock:
            found = self._resolve(repo_id, branch)
            if found is None:
                return
            repo, parent = found
            files = {**repo["commits"][parent], **added}
            blobs = {p: _git_blob_sha(b) for p, b in sorted(files.items())}
            key = json.dumps([parent, lines[0]["value"], len(self.server.commits), blobs])
            sha = hashlib.sha1(key.encode()).hexdigest()
            repo["commits"][sha] = files
            repo["refs"][branch] = sha
            self.server.commits.append((repo_id, branch, sha, sorted(added)))
        self._json(200, {"success": True, "commitOid": sha, "commitUrl": f"{self.server.url}/{repo_id}/commit/{sha}",
                         "hookOutput": ""})

    def do_HEAD(self):
        self._download()

    def do_GET(self):
        self._download()

    def _download(self) -> None:
        path = self._record()
        m = re.fullmatch(rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
        if m is None:
            return self._error(404, None, f"no route {self.command} {path}")
        with self.server.lock:
            found = self._resolve(m["repo"], unquote(m["rev"]))
        if found is None:
            return
        repo, sha = found
        data = repo["commits"][sha].get(unquote(m["file"]))
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
        self._send(200, data, {"Content-Type": "application/octet-stream", "ETag": f'"{_git_blob_sha(data)}"',
                               "X-Repo-Commit": sha, "Accept-Ranges": "bytes"})


def _git_blob_sha(data: bytes) -> str:
    """The git object id of a blob: what the Hub sends as the ETag of a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A fake Hub on 127.0.0.1 with huggingface_hub pointed at it (endpoint, token, cache in tmp_path, local only)."""
    import huggingface_hub
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHubHandler)
    server.daemon_threads = True
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.repos, server.commits, server.log, server.lock = {}, [], [], threading.RLock()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    env = {"HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HTTP_PROXY",
                "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    # huggingface_hub reads its environment once, at import: patch the constants derived from it as well.
    patched = {"ENDPOINT": server.url,
               "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
               "HF_HOME": env["HF_HOME"], "HF_HUB_CACHE": env["HF_HUB_CACHE"], "HF_XET_CACHE": str(tmp_path / "xet"),
               "HF_TOKEN_PATH": str(tmp_path / "hf_home" / "token"), "HF_HUB_OFFLINE": False,
               "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_DISABLE_XET": True, "HF_HUB_ETAG_TIMEOUT": 5,
               "HF_HUB_DOWNLOAD_TIMEOUT": 5}
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value)

    def local_only(request):
        if request.url.host != "127.0.0.1":
            raise RuntimeError(f"test tried to leave the machine: {request.method} {request.url}")

    # A fresh shared client, built under the environment above (no proxies), with the guard as its first request
    # hook and a 5 s timeout; closing it afterwards lets the next user build a default one again.
    huggingface_hub.close_session()
    client = huggingface_hub.get_session()
    client.event_hooks = {**client.event_hooks, "request": [local_only, *client.event_hooks["request"]]}
    client.timeout = 5
    try:
        yield server
    finally:
        huggingface_hub.close_session()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _random_gnn(seed: int) -> NiNoGNN:
    model = NiNoGNN(NiNoConfig(hid=16))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def _assert_same_weights(loaded, model) -> None:
    expected, got = model.state_dict(), loaded.state_dict()
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key


def _graph_and_states():
    torch.manual_seed(1)
    graph = build_neural_graph(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))
    return graph, torch.randn(graph.num_params, 5)


def test_push_then_load_roundtrip(fake_hub):
    from safetensors.torch import load as load_safetensors

    model = _random_gnn(0)
    commit_url = model.push_to_hub("me/tiny-nino")

    assert [(repo, branch, files) for repo, branch, _, files in fake_hub.commits] == \
        [("me/tiny-nino", "main", ["README.md", "config.json", "model.safetensors"])]
    sha = fake_hub.commits[0][2]
    assert commit_url == f"{fake_hub.url}/me/tiny-nino/commit/{sha}"
    stored = fake_hub.repos["me/tiny-nino"]["commits"][sha]
    assert json.loads(stored["config.json"]) == model.config.to_dict()
    pushed = load_safetensors(stored["model.safetensors"])
    assert pushed.keys() == model.state_dict().keys()
    assert all(torch.equal(pushed[k], v) for k, v in model.state_dict().items())
    card = stored["README.md"].decode()  # the generated model card: metadata, the load line with this repo id
    assert "library_name: nino-optim" in card and 'load_nowcaster("me/tiny-nino")' in card and '"hid": 16' in card
    # Every write carried the token.
    assert all(auth == f"Bearer {TOKEN}" for method, _, auth in fake_hub.log if method == "POST")

    loaded = load_nowcaster("me/tiny-nino")
    assert type(loaded) is NiNoGNN and loaded is not model and not loaded.training
    _assert_same_weights(loaded, model)
    graph, states = _graph_and_states()
    assert torch.equal(loaded.predict(graph, states, 3), model.predict(graph, states, 3))
    # Both files really came over HTTP from the fake Hub: the config at the branch head, the weights at the
    # commit that config came from (a push in between cannot mix two commits).
    downloads = {path for method, path, _ in fake_hub.log if method == "GET"}
    assert downloads == {"/me/tiny-nino/resolve/main/config.json", f"/me/tiny-nino/resolve/{sha}/model.safetensors"}


@pytest.mark.parametrize("cls, config", [(NiNoGNN, NiNoConfig(hid=16)), (WNN, WNNConfig(hid=8))])
def test_from_pretrained_with_a_repo_id(fake_hub, cls, config):
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    model.push_to_hub("me/model")
    loaded = cls.from_pretrained("me/model")
    assert type(loaded) is cls and loaded.config == config and not loaded.training
    _assert_same_weights(loaded, model)
    assert {path for method, path, _ in fake_hub.log if method == "GET"} == \
        {"/me/model/resolve/main/config.json", "/me/model/resolve/main/model.safetensors"}
    other = WNN if cls is NiNoGNN else NiNoGNN
    with pytest.raises(NowcasterLoadError, match="load_nowcaster"):
        other.from_pretrained("me/model")


def test_missing_repo_is_a_load_error(fake_hub):
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(NowcasterLoadError, match="me/does-not-exist") as info:
        load_nowcaster("me/does-not-exist")
    # It failed because the (fake) Hub said the repo does not exist, not for a network or proxy reason.
    assert isinstance(info.value.__context__, RepositoryNotFoundError)
    assert ("HEAD", "/me/does-not-exist/resolve/main/config.json", f"Bearer {TOKEN}") in fake_hub.log


def test_pinned_revision(fake_hub):
    first, second = _random_gnn(1), _random_gnn(2)
    first_sha = first.push_to_hub("me/tiny-nino").rsplit("/", 1)[-1]
    second_sha = second.push_to_hub("me/tiny-nino").rsplit("/", 1)[-1]  # create_repo answers 409: reused
    assert [sha for _, _, sha, _ in fake_hub.commits] == [first_sha, second_sha] and first_sha != second_sha
    assert fake_hub.repos["me/tiny-nino"]["refs"]["main"] == second_sha

    _assert_same_weights(load_nowcaster("me/tiny-nino"), second)
    _assert_same_weights(load_nowcaster("me/tiny-nino", revision="main"), second)
    # The first commit was never downloaded before, so this can only come from the server's commit `first_sha`.
    pinned = load_nowcaster("me/tiny-nino", revision=first_sha)
    _assert_same_weights(pinned, first)
    assert ("GET", f"/me/tiny-nino/resolve/{first_sha}/model.safetensors", f"Bearer {TOKEN}") in fake_hub.log
    graph, states = _graph_and_states()
    assert torch.equal(pinned.predict(graph, states, 3), first.predict(graph, states, 3))
    assert not torch.equal(pinned.predict(graph, states, 3), second.predict(graph, states, 3))
    _assert_same_weights(NiNoGNN.from_pretrained("me/tiny-nino", revision=first_sha), first)


def test_publish_the_bundled_weights_with_their_model_card(fake_hub):
    from huggingface_hub import ModelCard

    default = load_nowcaster("default")
    card = nowcast_hub.DEFAULT_WEIGHTS / "README.md"
    default.push_to_hub("nino-optim/nino-default", model_card_kwargs={"card": card})
    (repo, _, sha, files) = fake_hub.commits[0]
    assert files == ["README.md", "config.json", "model.safetensors"]
    stored = fake_hub.repos[repo]["commits"][sha]
    # The card's metadata and text as written (huggingface_hub re-serialises the YAML header).
    pushed, original = ModelCard(stored["README.md"].decode()), ModelCard(card.read_text())
    assert pushed.data.to_dict() == original.data.to_dict() and pushed.text == original.text
    # The same two files as the bundled copy, byte for byte where the format allows: the config exactly, the
    # tensors exactly.
    assert stored["config.json"] == (nowcast_hub.DEFAULT_WEIGHTS / "config.json").read_bytes()
    _assert_same_weights(load_nowcaster("nino-optim/nino-default"), default)


def test_the_shared_client_refuses_other_hosts(fake_hub):
    import huggingface_hub

    # 192.0.2.1 is TEST-NET-1 (documentation only): the guard must refuse it before any connection is tried.
    with pytest.raises(RuntimeError, match="leave the machine"):
        huggingface_hub.get_session().get("http://192.0.2.1/")

import json

import pytest
import torch

from conftest import TwoLayer, fm16, official_checkpoint
from nino_optim import NowcasterLoadError, build_neural_graph, load_nowcaster
from nino_optim.nowcast import Linefit, NiNoConfig, NiNoGNN, WNN, WNNConfig


def _random(model):
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


@pytest.mark.parametrize("make", [lambda: NiNoGNN(NiNoConfig(hid=16)), lambda: WNN(WNNConfig(hid=8))])
def test_save_and_load_roundtrip(tmp_path, make):
    model = _random(make())
    model.save_pretrained(tmp_path / "w")
    assert json.loads((tmp_path / "w" / "config.json").read_text())["hid"] in (16, 8)
    loaded = load_nowcaster(tmp_path / "w")
    assert type(loaded) is type(model) and not loaded.training
    graph = build_neural_graph(TwoLayer())
    states = torch.randn(graph.num_params, 5)
    assert torch.equal(loaded.predict(graph, states, 7), model.predict(graph, states, 7))
    assert torch.equal(load_nowcaster(tmp_path / "w" / "model.safetensors").predict(graph, states, 7),
                       model.predict(graph, states, 7))


def test_wrong_shape_is_a_clear_error(tmp_path):
    NiNoGNN(NiNoConfig(hid=16)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hid"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(NowcasterLoadError, match="wrong shapes"):
        load_nowcaster(tmp_path)


def test_missing_and_unexpected_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    NiNoGNN(NiNoConfig(hid=16)).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("layer_embed.weight")
    state["extra"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(NowcasterLoadError, match=r"missing \['layer_embed.weight'\].*unexpected \['extra'\]"):
        load_nowcaster(tmp_path)


def test_corrupt_files(tmp_path):
    NiNoGNN(NiNoConfig(hid=16)).save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(NowcasterLoadError, match="cannot read"):
        load_nowcaster(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(NowcasterLoadError, match="config.json"):
        load_nowcaster(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "transformer"}))
    with pytest.raises(NowcasterLoadError, match="architecture"):
        load_nowcaster(tmp_path)
    bad_pt = tmp_path / "bad.pt"
    bad_pt.write_bytes(b"\x00" * 100)
    with pytest.raises(NowcasterLoadError, match="cannot read"):
        load_nowcaster(bad_pt)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(NowcasterLoadError, match="not an official NiNo checkpoint"):
        load_nowcaster(tmp_path / "other.pt")


def test_official_checkpoint_with_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"state_dict": {}, "model_args": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(NowcasterLoadError):
        load_nowcaster(tmp_path / "evil.pt")


def test_official_gnn_drops_its_dead_layer():
    model = load_nowcaster(official_checkpoint("nino_no_posw.pt"))
    assert isinstance(model, NiNoGNN) and model.config.mp_layers == 2 and not model.config.wte_pos_enc
    assert sum(p.numel() for p in model.parameters()) == 549992 - 115328


def test_default_is_the_bundled_file_read_directly(monkeypatch, tmp_path):
    """``"default"`` is the bundled copy, tensor for tensor as safetensors reads the file, with no network."""
    import socket

    from safetensors.torch import load_file

    import nino_optim.nowcast.hub as hub

    def no_network(*args, **kwargs):
        raise AssertionError("loading the default nowcaster tried to open a connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    default = load_nowcaster("default")
    assert isinstance(default, NiNoGNN) and not default.training
    on_disk = load_file(hub.DEFAULT_WEIGHTS / "model.safetensors")
    loaded = default.state_dict()
    assert sorted(loaded) == sorted(on_disk)
    for name, tensor in on_disk.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    config = json.loads((hub.DEFAULT_WEIGHTS / "config.json").read_text())
    assert default.config.to_dict() == config
    graph = build_neural_graph(fm16())
    states = torch.randn(graph.num_params, 5).cumsum(1) * 0.01
    assert torch.isfinite(default.predict(graph, states, 40)).all()
    monkeypatch.setattr(hub, "DEFAULT_WEIGHTS", tmp_path / "missing")
    with pytest.raises(NowcasterLoadError, match="reinstall"):
        load_nowcaster("default")


def test_default_weights_are_not_the_official_ones():
    own, official = load_nowcaster("default").state_dict(), load_nowcaster(official_checkpoint("nino_no_posw.pt"))
    shared = [k for k, v in official.state_dict().items() if k in own and own[k].shape == v.shape]
    assert len(shared) > 10  # the same architecture ...
    for k in shared:  # ... with weights of its own
        assert not torch.allclose(own[k], official.state_dict()[k]), k


def test_specs():
    assert not load_nowcaster("linefit").weighted and load_nowcaster("Linefit+").weighted
    mine = Linefit()
    assert load_nowcaster(mine) is mine
    with pytest.raises(ValueError, match="linefit\\+"):
        load_nowcaster("no-such-thing.pt")
    with pytest.raises(TypeError, match="predict"):
        load_nowcaster(42)


def test_hub_repo_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(NowcasterLoadError, match="someone/not-cached"):
        load_nowcaster("someone/not-cached")


@pytest.mark.parametrize("cls, config", [(NiNoGNN, NiNoConfig(hid=16, wte_pos_enc=True, vocab_size=30)),
                                         (WNN, WNNConfig(hid=8, mlp_layers=3))])
def test_mixin_save_and_from_pretrained_are_exact(tmp_path, cls, config):
    from safetensors.torch import load_file

    model = _random(cls(config))
    model.save_pretrained(tmp_path / "w")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert json.loads((tmp_path / "w" / "config.json").read_text()) == config.to_dict()
    card = (tmp_path / "w" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: nino-optim" in card and f'"hid": {config.hid}' in card
    on_disk = load_file(tmp_path / "w" / "model.safetensors")
    assert all(torch.equal(on_disk[k], v) for k, v in model.state_dict().items()) and on_disk.keys() == \
        model.state_dict().keys()
    loaded = cls.from_pretrained(tmp_path / "w", chunk_size=1000)
    assert type(loaded) is cls and loaded.config == config and loaded.chunk_size == 1000 and not loaded.training
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_from_pretrained_refuses_the_other_architecture_and_unknown_keys(tmp_path):
    WNN(WNNConfig(hid=8)).save_pretrained(tmp_path / "wnn")
    with pytest.raises(NowcasterLoadError, match="'wnn' model, not a NiNoGNN"):
        NiNoGNN.from_pretrained(tmp_path / "wnn")
    assert isinstance(WNN.from_pretrained(tmp_path / "wnn"), WNN)
    config = json.loads((tmp_path / "wnn" / "config.json").read_text())
    (tmp_path / "wnn" / "config.json").write_text(json.dumps({**config, "heads": 4}))
    with pytest.raises(NowcasterLoadError, match=r"keys \['heads'\]"):
        load_nowcaster(tmp_path / "wnn")
    (tmp_path / "wnn" / "config.json").unlink()
    with pytest.raises(NowcasterLoadError, match="no readable config.json"):
        WNN.from_pretrained(tmp_path / "wnn")


def test_bundled_weights_load_through_the_mixin_unchanged():
    import nino_optim.nowcast.hub as hub

    direct = NiNoGNN.from_pretrained(hub.DEFAULT_WEIGHTS)
    default = load_nowcaster("default")
    assert direct.config == default.config
    for key, tensor in default.state_dict().items():
        assert torch.equal(direct.state_dict()[key], tensor), key


def test_official_names_that_cannot_be_fetched_say_why():
    with pytest.raises(NowcasterLoadError, match="nino.pt yourself"):
        load_nowcaster("nino")
    with pytest.raises(NowcasterLoadError, match="4-tower"):
        load_nowcaster("nino_towers4")


def test_official_format_with_token_id_features(tmp_path):
    """The layout of the official default ``nino.pt`` (token-id embedding, dead third layer) loads by path, and the
    token-id features reach the predictions of a model with a token embedding."""
    vocab = 12
    source = _random(NiNoGNN(NiNoConfig(hid=16, mp_layers=3, wte_pos_enc=True, vocab_size=vocab)))
    # The official GNN has no edge update after its last (dead) layer.
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("gnn.edge_update.2.")}
    torch.save({"state_dict": state, "model_args": {"hid": 16, "vocab_size": vocab}}, tmp_path / "nino.pt")
    model = load_nowcaster(tmp_path / "nino.pt")
    assert model.config.wte_pos_enc and model.config.mp_layers == 2
    assert model.wte_pos_enc_layer.weight.shape == (vocab + 1, 16)
    net = torch.nn.Sequential(torch.nn.Embedding(vocab, 4), torch.nn.Linear(4, 3))
    graph = build_neural_graph(net, example_inputs=(torch.zeros(1, 5, dtype=torch.long),))
    assert graph.pos_w.max() == vocab
    states = torch.randn(graph.num_params, 5).cumsum(1) * 0.01
    before = model.predict(graph, states, 4)
    with torch.no_grad():
        model.wte_pos_enc_layer.weight[1:].add_(1.0)
    assert not torch.equal(model.predict(graph, states, 4), before)

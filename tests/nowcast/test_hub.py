import json

import pytest
import torch

from conftest import TwoLayer, fm16, official_checkpoint
from nino_optim import NowcasterLoadError, build_neural_graph, load_nowcaster
from nino_optim.nowcast import Linefit, NiNoConfig, NiNoGNN, WNN, WNNConfig, save_pretrained


def _random(model):
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


@pytest.mark.parametrize("make", [lambda: NiNoGNN(NiNoConfig(hid=16)), lambda: WNN(WNNConfig(hid=8))])
def test_save_and_load_roundtrip(tmp_path, make):
    model = _random(make())
    save_pretrained(model, tmp_path / "w")
    assert json.loads((tmp_path / "w" / "config.json").read_text())["hid"] in (16, 8)
    loaded = load_nowcaster(tmp_path / "w")
    assert type(loaded) is type(model) and not loaded.training
    graph = build_neural_graph(TwoLayer())
    states = torch.randn(graph.num_params, 5)
    assert torch.equal(loaded.predict(graph, states, 7), model.predict(graph, states, 7))
    assert torch.equal(load_nowcaster(tmp_path / "w" / "model.safetensors").predict(graph, states, 7),
                       model.predict(graph, states, 7))


def test_wrong_shape_is_a_clear_error(tmp_path):
    save_pretrained(NiNoGNN(NiNoConfig(hid=16)), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hid"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(NowcasterLoadError, match="wrong shapes"):
        load_nowcaster(tmp_path)


def test_missing_and_unexpected_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    save_pretrained(NiNoGNN(NiNoConfig(hid=16)), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("layer_embed.weight")
    state["extra"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(NowcasterLoadError, match=r"missing \['layer_embed.weight'\].*unexpected \['extra'\]"):
        load_nowcaster(tmp_path)


def test_corrupt_files(tmp_path):
    save_pretrained(NiNoGNN(NiNoConfig(hid=16)), tmp_path)
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


def test_default_is_the_bundled_own_weights(monkeypatch, tmp_path):
    import nino_optim.nowcast.hub as hub

    default = load_nowcaster("default")
    assert isinstance(default, NiNoGNN) and not default.training
    bundled = load_nowcaster(hub.DEFAULT_WEIGHTS)
    for (name, p), q in zip(default.state_dict().items(), bundled.state_dict().values()):
        assert torch.equal(p, q), name
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

"""Tiny end-to-end check of the benchmark harness on real Fashion-MNIST (a few seconds on a CPU)."""
import math

import pytest
import torch

from conftest import needs_fashion_mnist
from nino_optim import NiNoAdam
from nino_optim import build_neural_graph
from nino_optim.bench import TASKS, build_model, load_fashion_mnist, train_steps_to_target
from nino_optim.bench.data import DatasetMissingError, is_available
from nino_optim.bench.steps_to_target import reduction

needs_data = needs_fashion_mnist


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_data():
    return load_fashion_mnist().subset(train=2048, test=500)


def test_convnets_match_the_official_net():
    for key, task in TASKS.items():
        if task.arch != "convnet":
            continue
        model = build_model(key, seed=0)
        assert sum(p.numel() for p in model.parameters()) == task.num_params
        assert [n for n, _ in model.named_parameters()] == [
            "fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias", "fc.4.weight", "fc.4.bias",
            "fc.8.weight", "fc.8.bias"]
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert torch.equal(build_model("fm16", seed=3).fc[0].weight, build_model("FM-16", seed=3).fc[0].weight)


def test_vit_task_is_a_patch_embedding_transformer_whose_graph_places_everything():
    model = build_model("vit", seed=0)
    assert sum(p.numel() for p in model.parameters()) == TASKS["vit"].num_params
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert torch.equal(build_model("vit", seed=3).pos_embed, build_model("vit", seed=3).pos_embed)
    graph = build_neural_graph(model)
    assert graph.fallback == {} and bool(graph.placed_mask.all())


def test_missing_dataset_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("NINO_FASHION_MNIST", str(tmp_path))
    assert not is_available()
    with pytest.raises(DatasetMissingError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()


def test_reduction():
    assert reduction(500, 1000) == 50.0
    assert reduction(None, 1000) is None and reduction(500, None) is None


@needs_data
def test_paper_split_and_normalisation():
    data = load_fashion_mnist()
    assert data.train_x.shape == (55_000, 1, 28, 28) and data.test_x.shape == (10_000, 1, 28, 28)
    assert data.train_y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert abs(float(data.train_x.mean())) < 0.01 and abs(float(data.train_x.std()) - 1) < 0.01


@needs_data
def test_nino_run_records_a_curve_with_nowcasts(small_data):
    steps = 40
    curve = train_steps_to_target(
        lambda m: NiNoAdam(m.parameters(), model=m, lr=6e-3, nowcaster="linefit+", period=10, context=5,
                           max_steps=steps),
        small_data, steps=steps, eval_every=10, thresholds=(0.2, 0.99), seed=0, batch_size=64)
    assert curve.steps == [0, 10, 20, 30, 40]
    # the call completing each 5-state buffer, but the last one: step 40 (= max_steps) is Adam's
    assert curve.nowcast_steps == [10, 20, 30]
    assert curve.finite and all(math.isfinite(v) for v in curve.train_loss[1:])
    assert all(0.0 <= a <= 1.0 for a in curve.values)
    assert curve.reached[0.99] is None
    assert curve.wall_time >= curve.train_time + curve.eval_time > 0


@needs_data
def test_same_seed_same_run(small_data):
    adam = lambda m: torch.optim.Adam(m.parameters(), lr=6e-3)
    a, b = (train_steps_to_target(adam, small_data, steps=20, eval_every=10, seed=5) for _ in range(2))
    c = train_steps_to_target(adam, small_data, steps=20, eval_every=10, seed=6)
    assert a.values == b.values and a.train_loss[1:] == b.train_loss[1:]
    assert a.train_loss[1:] != c.train_loss[1:]


def _demo():
    """examples/demo.py as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "demo.py"
    spec = importlib.util.spec_from_file_location("nino_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_demo_takes_the_official_checkpoint_only_where_told(tmp_path, monkeypatch):
    demo = _demo()
    monkeypatch.delenv("NINO_REFERENCE_DIR", raising=False)
    assert demo.resolve_methods(demo.parse_args([])) == {"adam": None, "default": "default"}
    with pytest.raises(SystemExit, match="--official"):
        demo.resolve_methods(demo.parse_args(["--methods", "adam,nino"]))
    ckpts = tmp_path / "upstream-checkpoints"
    ckpts.mkdir()
    nino = ckpts / "nino_no_posw.pt"
    nino.touch()
    assert demo.official_checkpoints(str(ckpts)) == (str(nino), None)
    assert demo.official_checkpoints(str(nino)) == (str(nino), None)
    with pytest.raises(SystemExit, match="no such file"):
        demo.official_checkpoints(str(tmp_path / "missing"))
    monkeypatch.setenv("NINO_REFERENCE_DIR", str(tmp_path))  # the default when --official is not given
    assert demo.resolve_methods(demo.parse_args([])) == {"adam": None, "default": "default", "nino": str(nino)}
    with pytest.raises(SystemExit, match="nino_mlp.pt"):
        demo.resolve_methods(demo.parse_args(["--methods", "wnn"]))


@needs_data
@pytest.mark.slow
def test_demo_smoke(tmp_path):
    """examples/demo.py end to end at toy size (about a minute on a 2-core CPU: full 10k test evaluations)."""
    demo = _demo()
    out = tmp_path / "curves.png"
    assert demo.main(["--steps", "20", "--eval-every", "10", "--period", "10", "--methods", "adam,linefit+",
                      "--thresholds", "50,60", "--out", str(out), "--no-progress"]) == 0
    assert out.stat().st_size > 0 and out.with_suffix(".json").exists()

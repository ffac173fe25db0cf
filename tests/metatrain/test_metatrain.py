import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nino_optim import build_neural_graph, load_nowcaster
from nino_optim.metatrain.trajectories import list_trajectories, load_trajectory, write_trajectory
from nino_optim.metatrain.train import TrainConfig, metatrain
from nino_optim.metatrain.windows import MIN_FUTURE, WindowSampler, collate, masked_l1
from nino_optim.metatrain.zoo import RunSpec, build_model, example_inputs, make_zoo
from nino_optim.nowcast.scaling import LayerwiseScaler

TINY = {"kind": "convnet", "hid": [4, 4, 4]}


def _fake_run(root, seed, n_states=30, save_every=10, arch=TINY):
    """A trajectory whose states move linearly in time (so windows have known targets)."""
    spec = RunSpec(arch=arch, optimizer="adam", lr=1e-3, weight_decay=0.0, seed=seed, steps=(n_states - 1) * save_every,
                   save_every=save_every)
    torch.manual_seed(seed)
    init = torch.cat([p.detach().reshape(-1) for p in build_model(arch).parameters()])
    direction = torch.randn_like(init) * 0.01
    states = torch.stack([init + t * direction for t in range(n_states)])
    meta = {"run_id": spec.run_id, "spec": spec.to_dict(), "steps": list(range(0, spec.steps + 1, save_every))}
    return write_trajectory(root, meta, states)


def test_zoo_is_deterministic_and_buildable():
    zoo = make_zoo(8, steps=100, save_every=10)
    assert [s.run_id for s in zoo] == [s.run_id for s in make_zoo(8, steps=100, save_every=10)]
    assert len({s.run_id for s in zoo}) == 8
    assert {s.arch["kind"] for s in zoo} == {"convnet", "mlp", "gpt"}
    for spec in zoo:
        (x,) = example_inputs(spec.arch)
        out = build_model(spec.arch)(x)
        assert out.shape == ((2, spec.arch["context"], 256) if spec.arch["kind"] == "gpt" else (2, 10))
        assert spec.dataset == ("pydoc-topics" if spec.arch["kind"] == "gpt" else "fashion-mnist")


def test_zoo_without_fm16_share_is_the_one_the_bundled_weights_were_trained_on():
    recorded = json.loads((Path(__file__).parents[2] / "src" / "nino_optim" / "pretrained" / "training_runs.json").read_text())
    gpu_runs = {name for name, _, device, *_ in recorded if device == "cuda"}  # the 3 CPU ones are from zoo seed 1
    assert len(gpu_runs) == 92
    assert gpu_runs <= {s.run_id for s in make_zoo(400)}


def test_zoo_fm16_share_trains_the_benchmark_convnet_and_only_changes_convnets():
    plain, mixed = make_zoo(80), make_zoo(80, fm16_share=0.5)
    fm16 = [s for s in mixed if s.arch == {"kind": "convnet", "hid": [16, 32, 32]}]
    assert 15 <= len(fm16) <= 35  # 50 convnet slots, each FM-16 with probability 1/2
    assert len({s.lr for s in fm16}) > 1 and len({s.seed for s in fm16}) == len(fm16)  # varied, not repeats
    assert [s.arch["kind"] for s in plain] == [s.arch["kind"] for s in mixed]
    assert all(s.arch == {"kind": "convnet", "hid": [16, 32, 32]} for s in make_zoo(16, fm16_share=1.0)
               if s.arch["kind"] == "convnet")
    with pytest.raises(ValueError, match="fm16_share"):
        make_zoo(8, fm16_share=1.5)


def test_zoo_kinds_keeps_the_full_zoos_runs_of_those_kinds():
    convnets = make_zoo(12, zoo_seed=9, fm16_share=0.5, kinds=["convnet"])
    assert len(convnets) == 12 and {s.arch["kind"] for s in convnets} == {"convnet"}
    assert convnets == [s for s in make_zoo(40, zoo_seed=9, fm16_share=0.5) if s.arch["kind"] == "convnet"][:12]
    assert {s.arch["kind"] for s in make_zoo(6, kinds=("mlp", "gpt"))} == {"mlp", "gpt"}
    with pytest.raises(ValueError, match="kinds must be some of convnet, mlp, gpt"):
        make_zoo(4, kinds=["transformer"])


def test_zoo_lr_scale_multiplies_the_same_draws():
    base, scaled = make_zoo(16, schedule="cosine"), make_zoo(16, schedule="cosine", lr_scale=2.0)
    assert [s.arch for s in base] == [s.arch for s in scaled] and [s.seed for s in base] == [s.seed for s in scaled]
    assert all(abs(b.lr * 2 - s.lr) <= 1e-2 * s.lr for b, s in zip(base, scaled))
    assert len({s.run_id for s in base} | {s.run_id for s in scaled}) == 32
    with pytest.raises(ValueError, match="lr_scale"):
        make_zoo(4, lr_scale=0)


def test_trajectory_roundtrip_and_listing(tmp_path):
    path = _fake_run(tmp_path, 1)
    (tmp_path / ".half-written.tmp").mkdir()  # an interrupted write is not listed
    assert list_trajectories(tmp_path) == [path]
    traj = load_trajectory(path)
    assert traj.states.dtype == torch.float16 and traj.states.shape[0] == 30


def test_collect_records_states_and_resumes(tmp_path):
    from nino_optim.bench.data import is_available, load_fashion_mnist
    from nino_optim.metatrain.collect import collect, run_one

    if not is_available():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    spec = RunSpec(arch=TINY, optimizer="adamw", lr=3e-3, weight_decay=1e-2, seed=3, steps=40, save_every=10,
                   batch_size=32)
    path = run_one(spec, load_fashion_mnist().subset(512, 200), tmp_path)
    traj = load_trajectory(path)
    model = build_model(TINY)
    assert traj.states.shape == (5, sum(p.numel() for p in model.parameters()))
    assert traj.meta["steps"] == [0, 10, 20, 30, 40] and len(traj.meta["metrics"]) == 5
    assert not torch.equal(traj.states[0], traj.states[-1])
    torch.manual_seed(3)  # state 0 is the seeded initialisation
    init = torch.cat([p.detach().reshape(-1) for p in build_model(TINY).parameters()])
    assert torch.equal(traj.states[0], init.half())
    assert collect([spec], tmp_path) == []  # already there: nothing is run again


def test_collect_records_a_language_model_and_its_graph_windows(tmp_path):
    from nino_optim.bench.text import load_pydoc_topics
    from nino_optim.metatrain.collect import run_one

    arch = {"kind": "gpt", "layers": 2, "width": 16, "heads": 2, "context": 16}
    spec = RunSpec(arch=arch, optimizer="adamw", lr=3e-3, weight_decay=1e-2, seed=5, steps=60, save_every=4,
                   batch_size=4, dataset="pydoc-topics")
    path = run_one(spec, load_pydoc_topics(), tmp_path)
    traj = load_trajectory(path)
    assert traj.states.shape == (16, sum(p.numel() for p in build_model(arch).parameters()))
    assert all(m["val_perplexity"] > 1 for m in traj.meta["metrics"])
    assert traj.meta["metrics"][-1]["val_perplexity"] < traj.meta["metrics"][0]["val_perplexity"]
    window = WindowSampler([path], spacing=4, horizon=8).sample(torch.Generator().manual_seed(0))
    graph = build_neural_graph(build_model(arch), example_inputs=example_inputs(arch))
    assert window.edge_attr.shape == (graph.num_edges, 9 * 5) and not graph.fallback
    assert int(window.mask.sum()) == graph.num_params * 8
    moved = window.to("meta")
    assert moved.target.device.type == "meta" and moved.mask.dtype == torch.bool


def test_windows_scale_with_input_statistics_and_mask(tmp_path):
    path = _fake_run(tmp_path, 1, n_states=30)
    sampler = WindowSampler([path], spacing=20, horizon=40)  # stride 2 saved states
    graph = sampler.items[0][1]
    w = sampler.sample(torch.Generator().manual_seed(0), flip_lpe=False)
    E, c = graph.num_edges, 5
    assert w.edge_attr.shape == (E, 9 * c) and w.target.shape == w.mask.shape == (E, 9, 40)
    # every parameter scalar sits in exactly one (edge, slot); valid horizons are those inside the trajectory
    steps = int(w.mask[graph.param_edge[0], graph.param_slot[0]].sum())
    assert MIN_FUTURE <= steps <= 40
    assert int(w.mask.sum()) == graph.num_params * steps
    assert not w.mask[graph.edge_type >= 10].any()
    # inputs: per tensor, zero mean over all elements and states
    inputs = w.edge_attr.view(E, 9, c)[graph.param_edge, graph.param_slot]  # [P, c]
    first = graph.params[0]
    assert inputs[: first.numel].mean().abs() < 1e-4
    # linear trajectories: the scaled target continues the scaled inputs' line exactly
    step_in = inputs[:, -1] - inputs[:, -2]
    target = w.target[graph.param_edge, graph.param_slot]  # [P, K]
    assert torch.allclose(target[:, 0], inputs[:, -1] + step_in, atol=2e-2)
    assert torch.all(target[:, steps:] == 0)


def test_windows_drawn_together_equal_windows_drawn_one_by_one(tmp_path):
    """A group of windows of one trajectory: each its own start, statistics and LPE flips, as if drawn alone."""
    path = _fake_run(tmp_path, 1, n_states=40)
    sampler = WindowSampler([path], spacing=20, horizon=40)
    traj, graph, (stride,) = sampler.items[0]
    E, N, c, B = graph.num_edges, graph.num_nodes, 5, 4
    group = sampler.sample(torch.Generator().manual_seed(3), windows=B)
    replay = torch.Generator().manual_seed(3)  # the same draws: trajectory, starts, LPE signs
    torch.randint(1, (1,), generator=replay)
    starts = torch.randint(40 - 1 - (c + MIN_FUTURE - 1) * stride + 1, (B,), generator=replay)
    signs = torch.randint(2, (B, 1, 8), generator=replay) * 2 - 1
    assert len(set(starts.tolist())) > 1
    assert group.edge_attr.shape == (B * E, 9 * c) and group.target.shape == group.mask.shape == (B * E, 9, 40)
    assert torch.equal(group.edge_index[:, E:2 * E], graph.edge_index + N)
    for b, start in enumerate(starts.tolist()):
        rows = slice(b * E, (b + 1) * E)
        _assert_window_is(group.edge_attr[rows], group.target[rows], group.mask[rows], sampler, start, stride)
        assert torch.equal(group.lpe[b * N:(b + 1) * N], graph.lpe * signs[b])


def _assert_window_is(edge_attr, target, mask, sampler, start, stride, c=5, K=40):
    """One window's rows equal the single-window definition: c inputs and up to K targets, ``stride`` saved
    states apart from ``start``, scaled with the inputs' statistics."""
    traj, graph, _ = sampler.items[0]
    states = traj.states[start::stride].t().float()  # [P, c + steps]
    steps = min(states.shape[1] - c, K)
    scaler = LayerwiseScaler(states[:, :c], graph.params)
    attr = sampler._edges(graph, scaler.scale(states[:, :c])).flatten(1)
    expected = sampler._edges(graph, torch.nn.functional.pad(scaler.scale(states[:, c:c + steps]), (0, K - steps)))
    assert torch.allclose(edge_attr, attr, atol=1e-6)
    assert torch.allclose(target, expected, atol=1e-6)
    assert int(mask.sum()) == graph.num_params * steps


def test_stretched_windows_draw_their_spacing_around_the_inference_spacing(tmp_path):
    path = _fake_run(tmp_path, 1, n_states=80)  # saved every 10 steps
    sampler = WindowSampler([path], spacing=50, horizon=40, stretch=0.4)
    # 30-70 steps apart, of which 60 and 70 leave too few states for 5 inputs and 10 targets (14 x 6 + 1 > 80)
    assert sampler.items[0][2] == [3, 4, 5]
    drawn = set()
    for seed in range(12):
        w = sampler.sample(torch.Generator().manual_seed(seed), flip_lpe=False)
        replay = torch.Generator().manual_seed(seed)  # the draws: trajectory, stride, start
        torch.randint(1, (1,), generator=replay)
        stride = [3, 4, 5][int(torch.randint(3, (1,), generator=replay))]
        start = int(torch.randint(80 - 1 - (5 + MIN_FUTURE - 1) * stride + 1, (1,), generator=replay))
        _assert_window_is(w.edge_attr, w.target, w.mask, sampler, start, stride)
        drawn.add(stride)
    assert drawn == {3, 4, 5}
    assert WindowSampler([path], spacing=50).items[0][2] == [5]  # no stretch: the spacing itself
    with pytest.raises(ValueError, match="stretch"):
        WindowSampler([path], spacing=50, stretch=1.0)


def test_collate_offsets_nodes(tmp_path):
    paths = [_fake_run(tmp_path, s) for s in (1, 2)]
    sampler = WindowSampler(paths, spacing=10)
    gen = torch.Generator().manual_seed(0)
    a, b = sampler.sample(gen), sampler.sample(gen)
    batch = collate([a, b])
    n_a = a.lpe.shape[0]
    assert torch.equal(batch.edge_index[:, a.edge_index.shape[1]:], b.edge_index + n_a)
    assert batch.lpe.shape[0] == n_a + b.lpe.shape[0]


def test_metatrain_resumes_exactly_and_writes_loadable_weights(tmp_path):
    paths = [_fake_run(tmp_path / "data", s) for s in (1, 2, 3)]
    train, val = WindowSampler(paths[:2], spacing=10), WindowSampler(paths[2:], spacing=10)
    cfg = TrainConfig(iterations=6, batch_size=4, windows_per_trajectory=2, eval_every=3, hid=16, val_windows=2)
    straight = metatrain(train, val, tmp_path / "straight", cfg, progress=False)
    # interrupted after the checkpoint at iteration 3, then resumed
    interrupted = TrainConfig(**{**cfg.__dict__})
    out = tmp_path / "resumed"
    import nino_optim.metatrain.train as train_module

    calls = {"n": 0}
    original = train_module.masked_l1

    def stop_after_three(pred, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(pred, batch)

    train_module.masked_l1 = stop_after_three
    try:
        with pytest.raises(KeyboardInterrupt):
            metatrain(train, val, out, interrupted, progress=False)
    finally:
        train_module.masked_l1 = original
    resumed = metatrain(train, val, out, interrupted, progress=False)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    history = json.loads((out / "history.json").read_text())
    assert [it for it, _ in history["val"]] == [3, 6]
    assert (out / "curves.png").exists()
    loaded = load_nowcaster(out / "weights")
    graph = build_neural_graph(build_model(TINY))
    states = load_trajectory(paths[0]).states[:5].t().float()
    assert torch.equal(loaded.predict(graph, states, 3), resumed.eval().predict(graph, states, 3))
    with pytest.raises(ValueError, match="another configuration"):
        metatrain(train, val, out, TrainConfig(iterations=7, batch_size=2, eval_every=3, hid=16, val_windows=2),
                  progress=False)
    with pytest.raises(ValueError, match="must divide batch_size"):
        metatrain(train, val, tmp_path / "bad", TrainConfig(batch_size=4, windows_per_trajectory=3), progress=False)


def test_metatrain_fine_tunes_given_weights_and_refuses_ones_that_do_not_fit(tmp_path):
    paths = [_fake_run(tmp_path / "data", s) for s in (1, 2)]
    train, val = WindowSampler(paths[:1], spacing=10), WindowSampler(paths[1:], spacing=10)
    first = metatrain(train, val, tmp_path / "first", TrainConfig(iterations=3, batch_size=2, eval_every=3, hid=16,
                                                                  val_windows=1), progress=False)
    # With a learning rate of 0 the first step changes nothing, so the result is the starting point itself; a seed
    # other than the first run's shows it is not a random initialisation that happens to agree.
    start = TrainConfig(iterations=1, batch_size=2, eval_every=1, hid=16, val_windows=1, lr=0.0, seed=7,
                        init=str(tmp_path / "first" / "weights"))
    same = metatrain(train, val, tmp_path / "same", start, progress=False)
    for (name, p), q in zip(first.state_dict().items(), same.state_dict().values()):
        assert torch.equal(p, q), name
    moved = metatrain(train, val, tmp_path / "moved", TrainConfig(**{**start.__dict__, "lr": 1e-2, "iterations": 2}),
                      progress=False)
    assert any(not torch.equal(p, q) for p, q in zip(first.state_dict().values(), moved.state_dict().values()))
    with pytest.raises(ValueError, match=r"does not fit this run: hid 128 \(this run: 16\)"):
        metatrain(train, val, tmp_path / "big", TrainConfig(iterations=1, hid=16, init="default"), progress=False)
    with pytest.raises(ValueError, match="needs NiNo GNN weights"):
        metatrain(train, val, tmp_path / "line", TrainConfig(iterations=1, hid=16, init="linefit"), progress=False)


def test_metatrain_stops_on_a_non_finite_loss_keeping_the_last_good_checkpoint(tmp_path, monkeypatch):
    paths = [_fake_run(tmp_path / "data", s) for s in (1, 2)]
    train, val = WindowSampler(paths[:1], spacing=10), WindowSampler(paths[1:], spacing=10)
    import nino_optim.metatrain.train as train_module

    original, calls = train_module.masked_l1, {"n": 0}

    def nan_at_iteration_five(pred, batch):
        loss = original(pred, batch)
        if torch.is_grad_enabled():  # training, not the held-out evaluation
            calls["n"] += 1
            if calls["n"] == 5:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_module, "masked_l1", nan_at_iteration_five)
    cfg = TrainConfig(iterations=9, batch_size=1, eval_every=3, hid=16, val_windows=1)
    with pytest.raises(FloatingPointError, match="nan at iteration 5"):
        metatrain(train, val, tmp_path / "out", cfg, progress=False)
    checkpoint = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


def test_masked_l1_ignores_masked_entries(tmp_path):
    sampler = WindowSampler([_fake_run(tmp_path, 1)], spacing=10)
    batch = collate([sampler.sample(torch.Generator().manual_seed(0))])
    pred = batch.target.clone()
    pred[~batch.mask] = 1e6
    assert masked_l1(pred, batch) == 0
    pred[batch.mask] += 0.5
    assert masked_l1(pred, batch).item() == pytest.approx(0.5)


def test_metatrain_command_stop_after_counts_the_time_spent_loading(tmp_path, monkeypatch):
    """A deadline given as --stop-after must hold even when loading the trajectories takes most of it."""
    from nino_optim import cli
    from nino_optim.metatrain import windows

    for s in (1, 2, 3):
        _fake_run(tmp_path / "data", s)
    loading = windows.WindowSampler.__init__

    def slow_loading(self, *args, **kwargs):
        time.sleep(1.0)
        loading(self, *args, **kwargs)

    monkeypatch.setattr(windows.WindowSampler, "__init__", slow_loading)
    out = tmp_path / "run"
    cli.main(["metatrain", "--data", str(tmp_path / "data"), "--out", str(out), "--spacing", "10",
              "--iterations", "400", "--batch-size", "2", "--eval-every", "5", "--hid", "16", "--val-every", "3",
              "--stop-after", "1.5"])
    history = json.loads((out / "history.json").read_text())
    assert history["stopped_at"] == 5  # the 2 s of loading used the budget up: stop at the first checkpoint
    assert load_nowcaster(out / "weights").config.hid == 16


def test_metatrain_takes_trajectories_that_appear_during_training(tmp_path):
    """A collection still running: trajectories finished later join the training set at the next checkpoint."""
    paths = [_fake_run(tmp_path / "data", s) for s in (1, 2, 3)]
    late = _fake_run(tmp_path / "late", 4, arch={"kind": "mlp", "hidden": [8]})  # a new architecture, too
    train, val = WindowSampler(paths[:2], spacing=10), WindowSampler(paths[2:], spacing=10)
    arrivals = [[late], [], []]
    cfg = TrainConfig(iterations=9, batch_size=2, eval_every=3, hid=16, val_windows=2)
    metatrain(train, val, tmp_path / "run", cfg, progress=False, more_data=lambda: arrivals.pop(0))
    assert len(train.items) == 3 and train.items[2][0].meta["spec"]["arch"]["kind"] == "mlp"
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["trajectories"] == [[0, 2], [3, 3], [6, 3], [9, 3]]
    drawn = {train.sample(torch.Generator().manual_seed(s)).edge_attr.shape[0] for s in range(20)}
    assert len(drawn) == 2  # windows now come from both graphs


def test_metatrain_command_refuses_watch_with_a_subset(tmp_path):
    from nino_optim import cli

    with pytest.raises(SystemExit, match="--watch"):
        cli.main(["metatrain", "--data", str(tmp_path), "--watch", "--max-train", "4"])


def test_metatrain_command_watch_adds_new_trajectories_once(tmp_path, monkeypatch):
    from nino_optim import cli
    from nino_optim.metatrain import train as train_module

    data = tmp_path / "data"
    for s in (1, 2, 3):
        _fake_run(data, s)
    evaluate = train_module.evaluate

    def evaluate_while_a_run_finishes(model, batches):
        if not list(data.glob("*s4")):
            _fake_run(data, 4)  # written by the collection between two checkpoints
        return evaluate(model, batches)

    monkeypatch.setattr(train_module, "evaluate", evaluate_while_a_run_finishes)
    out = tmp_path / "run"
    cli.main(["metatrain", "--data", str(data), "--out", str(out), "--spacing", "10", "--iterations", "6",
              "--batch-size", "2", "--eval-every", "2", "--hid", "16", "--val-every", "3", "--watch"])
    history = json.loads((out / "history.json").read_text())
    assert history["trajectories"] == [[0, 2], [2, 3], [4, 3], [6, 3]]


def test_metatrain_time_schedule_anneals_within_its_seconds_and_stays_finished(tmp_path):
    paths = [_fake_run(tmp_path / "data", s) for s in (1, 2, 3)]
    train, val = WindowSampler(paths[:2], spacing=10), WindowSampler(paths[2:], spacing=10)
    cfg = TrainConfig(iterations=100_000, batch_size=2, eval_every=50, hid=16, val_windows=2, seconds=2.0)
    out = tmp_path / "run"
    started = time.perf_counter()
    metatrain(train, val, out, cfg, progress=False)
    assert time.perf_counter() - started < 30  # ended by time, far short of the iterations
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    history = json.loads(ckpt["history"])
    assert 0 < history["schedule_ended_at"] == ckpt["iteration"] < 100_000
    assert ckpt["seconds"] >= 2.0
    assert ckpt["optimizer"]["param_groups"][0]["lr"] < 0.01 * cfg.lr  # annealed, not cut off mid-schedule
    assert (out / "weights" / "model.safetensors").exists()
    metatrain(train, val, out, cfg, progress=False)  # running it again adds nothing
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == ckpt["iteration"]
    with pytest.raises(ValueError, match="seconds must be positive"):
        metatrain(train, val, tmp_path / "never", replace(cfg, seconds=0), progress=False)


def test_metatrain_time_schedule_ends_at_its_floor_when_iterations_are_slow(tmp_path, monkeypatch):
    """Iterations of 0.3 s (on a fake clock) against a 1 s budget: the last one runs at the bottom of the decay."""
    from types import SimpleNamespace

    import nino_optim.metatrain.train as train_module

    clock = {"now": 0.0}
    original = train_module.masked_l1

    def slow(pred, batch):
        if torch.is_grad_enabled():  # a training iteration, not the held-out evaluation
            clock["now"] += 0.3
        return original(pred, batch)

    monkeypatch.setattr(train_module, "masked_l1", slow)
    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    paths = [_fake_run(tmp_path / "data", s) for s in (1, 2, 3)]
    train, val = WindowSampler(paths[:2], spacing=10), WindowSampler(paths[2:], spacing=10)
    cfg = TrainConfig(iterations=1000, batch_size=2, eval_every=1000, hid=16, val_windows=2, seconds=1.0)
    metatrain(train, val, tmp_path / "run", cfg, progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == 4  # ends after 1.2 s; the rate at its start would have been 2.4% of the peak
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(cfg.min_lr)


def test_metatrain_command_watch_waits_for_two_trajectories(tmp_path):
    import threading

    from nino_optim import cli

    data = tmp_path / "data"
    _fake_run(data, 1)
    later = threading.Timer(0.5, _fake_run, args=(data, 2))  # the collection finishes its second run
    later.start()
    out = tmp_path / "run"
    cli.main(["metatrain", "--data", str(data), "--out", str(out), "--spacing", "10", "--iterations", "2",
              "--batch-size", "1", "--eval-every", "2", "--hid", "16", "--watch"])
    later.join()
    assert json.loads((out / "history.json").read_text())["trajectories"][0] == [0, 1]  # 1 trains, 1 held out


def test_collect_evaluates_a_densely_stored_run_at_most_fifty_times(tmp_path):
    from nino_optim.bench.data import is_available, load_fashion_mnist
    from nino_optim.metatrain.collect import METRIC_POINTS, run_one

    if not is_available():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    spec = RunSpec(arch=TINY, optimizer="adam", lr=3e-3, weight_decay=0.0, seed=4, steps=150, save_every=1,
                   batch_size=16)
    traj = load_trajectory(run_one(spec, load_fashion_mnist().subset(512, 200), tmp_path))
    metrics = traj.meta["metrics"]
    assert traj.states.shape[0] == len(metrics) == 151 and all("train_loss" in m for m in metrics[1:])
    evaluated = [step for step, m in zip(traj.meta["steps"], metrics) if "test_acc" in m]
    assert evaluated == list(range(0, 151, 3)) and len(evaluated) <= METRIC_POINTS + 1  # and the initial state


def test_scheduled_zoo_keeps_the_draws_and_names_its_runs_apart():
    constant, cosine = make_zoo(16), make_zoo(16, schedule="cosine", warmup=0.1)
    assert [(a.arch, a.lr, a.seed) for a in constant] == [(b.arch, b.lr, b.seed) for b in cosine]
    assert all(s.schedule == "cosine" and s.warmup == 0.1 and "-cosine0.1-" in s.run_id for s in cosine)
    assert not {s.run_id for s in constant} & {s.run_id for s in cosine}
    with pytest.raises(ValueError, match="unknown schedule"):
        make_zoo(4, schedule="step")


def test_collect_records_a_scheduled_run_whose_steps_shrink_with_the_rate(tmp_path):
    from nino_optim.bench.data import is_available, load_fashion_mnist
    from nino_optim.metatrain.collect import run_one
    from nino_optim.metatrain.stacked import stack_key

    if not is_available():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    spec = RunSpec(arch=TINY, optimizer="adam", lr=3e-3, weight_decay=0.0, seed=3, steps=100, save_every=10,
                   batch_size=32, schedule="cosine", warmup=0.0)
    assert stack_key(spec) is None  # a scheduled run trains alone
    traj = load_trajectory(run_one(spec, load_fashion_mnist().subset(512, 200), tmp_path))
    assert traj.meta["spec"]["schedule"] == "cosine"
    moves = (traj.states[1:].float() - traj.states[:-1].float()).norm(dim=1)
    assert moves[-1] < 0.25 * moves[0]  # the rate decays to zero: the last 10 steps barely move

import math
from dataclasses import replace

import pytest
import torch

from nino_optim.metatrain.stacked import StackedAdam, run_stack, stack_groups
from nino_optim.metatrain.trajectories import list_trajectories, load_trajectory
from nino_optim.metatrain.zoo import RunSpec

TINY = {"kind": "convnet", "hid": [4, 8, 4]}
GPT = {"kind": "gpt", "layers": 2, "width": 16, "heads": 2, "context": 32}


def _spec(seed, arch=TINY, optimizer="adam", lr=3e-3, **kw):
    dataset = "pydoc-topics" if arch["kind"] == "gpt" else "fashion-mnist"
    return RunSpec(arch=arch, optimizer=optimizer, lr=lr, weight_decay=1e-2 if optimizer == "adamw" else 0.0,
                   seed=seed, steps=kw.pop("steps", 12), save_every=kw.pop("save_every", 3),
                   batch_size=kw.pop("batch_size", 32), dataset=dataset, **kw)


def _fashion_mnist():
    from nino_optim.bench.data import is_available, load_fashion_mnist

    if not is_available():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return load_fashion_mnist().subset(512, 200)


def test_stack_groups_keeps_like_runs_together_in_order_and_language_models_alone():
    other = {"kind": "convnet", "hid": [8, 8, 8]}
    specs = [_spec(1), _spec(2, other), _spec(3, GPT), _spec(4), _spec(5), _spec(6, other), _spec(7, GPT),
             _spec(8, steps=24)]
    groups = stack_groups(specs, 2)
    assert [[s.seed for s in g] for g in groups] == [[1, 4], [2, 6], [3], [5], [7], [8]]
    assert [[s.seed for s in g] for g in stack_groups(specs, 1)] == [[s.seed] for s in specs]
    with pytest.raises(ValueError, match="at least 1"):
        stack_groups(specs, 0)


def test_stacked_adam_equals_torch_adam_and_adamw_for_each_member():
    specs = [_spec(1, lr=1e-2), _spec(2, optimizer="adamw", lr=3e-3), replace(_spec(3), weight_decay=0.1)]
    torch.manual_seed(0)
    init = [torch.randn(4, 3) for _ in specs]
    singles = [torch.nn.Parameter(p.clone()) for p in init]
    opts = [(torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam)([p], lr=s.lr, weight_decay=s.weight_decay)
            for s, p in zip(specs, singles)]
    stacked = {"w": torch.stack(init)}
    stacked_opt = StackedAdam(stacked, specs)
    for _ in range(5):
        grads = torch.randn(len(specs), 4, 3)
        for p, opt, g in zip(singles, opts, grads):
            p.grad = g.clone()
            opt.step()
        stacked_opt.step({"w": grads})
    for i, p in enumerate(singles):
        torch.testing.assert_close(stacked["w"][i], p.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("arch", [TINY, {"kind": "mlp", "hidden": [16, 16]}], ids=["convnet", "mlp"])
def test_run_stack_records_what_single_runs_record(tmp_path, arch):
    from nino_optim.metatrain.collect import run_one

    data = _fashion_mnist()
    specs = [_spec(1, arch, lr=2e-3), _spec(2, arch, optimizer="adamw", lr=5e-3), _spec(3, arch, lr=1e-3)]
    stacked = [load_trajectory(p) for p in run_stack(specs, data, tmp_path / "stacked")]
    single = [load_trajectory(run_one(s, data, tmp_path / "single")) for s in specs]
    for a, b in zip(stacked, single):
        assert a.meta["run_id"] == b.meta["run_id"] and a.meta["stacked"] == 3
        assert a.meta["steps"] == b.meta["steps"] == [0, 3, 6, 9, 12]
        assert a.meta["params"] == b.meta["params"]
        assert torch.equal(a.states[0], b.states[0])  # each member's own seeded initialisation
        # float rounding differs (a batched convolution), the runs do not: states stored in float16 agree closely
        torch.testing.assert_close(a.states.float(), b.states.float(), rtol=0, atol=2e-3)
        for ma, mb in zip(a.meta["metrics"], b.meta["metrics"]):
            assert ma.keys() == mb.keys()
            if "test_acc" in ma:
                assert abs(ma["test_acc"] - mb["test_acc"]) <= 1 / 200 + 1e-9
            if "train_loss" in ma:
                assert ma["train_loss"] == pytest.approx(mb["train_loss"], rel=1e-3)
    assert not torch.equal(stacked[0].states[-1], stacked[2].states[-1])


def test_run_stack_leaves_out_a_diverged_member_and_writes_the_others(tmp_path):
    messages = []
    specs = [_spec(1), _spec(2, lr=math.inf), _spec(3)]
    written = run_stack(specs, _fashion_mnist(), tmp_path, log=messages.append)
    assert [p.name for p in written] == [specs[0].run_id, specs[2].run_id]
    assert [p.name for p in list_trajectories(tmp_path)] == sorted([specs[0].run_id, specs[2].run_id])
    assert len(messages) == 1 and specs[1].run_id in messages[0] and "not recorded" in messages[0]


def test_run_stack_refuses_runs_that_cannot_train_together(tmp_path):
    with pytest.raises(ValueError, match="stack_groups"):
        run_stack([_spec(1), _spec(2, {"kind": "convnet", "hid": [8, 8, 8]})], None, tmp_path)
    with pytest.raises(ValueError, match="stack_groups"):
        run_stack([_spec(1, GPT), _spec(2, GPT)], None, tmp_path)


def test_collect_stacks_and_resumes(tmp_path):
    from nino_optim.metatrain.collect import collect

    _fashion_mnist()
    specs = [_spec(seed, steps=6) for seed in (1, 2, 3)]
    assert sorted(collect(specs, tmp_path, stack=2)) == sorted(s.run_id for s in specs)
    assert sorted(load_trajectory(p).meta.get("stacked", 1) for p in list_trajectories(tmp_path)) == [1, 2, 2]
    assert collect(specs, tmp_path, stack=2) == []  # all there: nothing runs again

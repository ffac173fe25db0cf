"""Exact resume: a run checkpointed and continued in a fresh process equals the straight run bitwise."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import official_checkpoint
from nino_optim import NiNoAdam

HERE = Path(__file__).parent
WORKER = HERE / "_resume_worker.py"

_spec = importlib.util.spec_from_file_location("_resume_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

TOTAL, BREAK = 2500, 1300  # nowcasts at steps 1000 and 2000, one each side of the break


def _resume_in_fresh_process(spec, tmp_path):
    model_ckpt, opt_ckpt, out = tmp_path / "model.pt", tmp_path / "opt.pt", tmp_path / "result.pt"
    first = worker.run(spec, 0, BREAK, save_to=(model_ckpt, opt_ckpt))
    proc = subprocess.run([sys.executable, str(WORKER), str(spec), str(BREAK), str(TOTAL), str(out),
                           str(model_ckpt), str(opt_ckpt)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return first, torch.load(out, weights_only=True), torch.load(opt_ckpt, weights_only=True)


def _check_exact_resume(spec, tmp_path):
    straight = worker.run(spec, 0, TOTAL)
    assert straight["ks"] == [40, 1]  # both nowcasts happened (k-decay over 2500 steps with period 1000)
    assert straight["warnings"] == []  # and neither was rejected
    first, resumed, opt_state = _resume_in_fresh_process(spec, tmp_path)
    # The checkpoint is mid-cycle: one slot (step 1200) of the history is filled.
    assert opt_state["nino"]["steps_done"] == BREAK
    assert opt_state["nino"]["history"].shape[0] == 1
    assert first["ks"] == [40] and resumed["ks"] == [1]
    assert resumed["warnings"] == []
    assert resumed["steps_done"] == TOTAL
    assert straight["params"].keys() == resumed["params"].keys()
    for name, value in straight["params"].items():
        assert torch.equal(resumed["params"][name], value), name
    # Sanity: the resumed run really trained past the break.
    assert any(not torch.equal(first["params"][n], v) for n, v in straight["params"].items())


def test_exact_resume_in_fresh_process_linefit(tmp_path):
    _check_exact_resume("linefit+", tmp_path)


def test_exact_resume_in_fresh_process_nino_gnn(tmp_path):
    _check_exact_resume(str(official_checkpoint("nino_no_posw.pt")), tmp_path)


# ------------------------------------------------------------------------------------------------ in-process
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _small(model, period=10, **kw):
    return NiNoAdam(model.parameters(), model, period=period, context=5, max_steps=50, **kw)


def _steps(model, opt, start, stop):
    for step in range(start, stop):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("at", [1, 7, 9, 10, 13, 20, 29])
def test_resume_at_any_point_of_the_cycle(tmp_path, at):
    model = _mlp()
    opt = _small(model)
    _steps(model, opt, 0, 35)
    straight = [p.detach().clone() for p in model.parameters()]

    model = _mlp()
    opt = _small(model)
    _steps(model, opt, 0, at)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    model = _mlp()
    opt = _small(model)
    model.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    opt.load_state_dict(torch.load(tmp_path / "o.pt", weights_only=True))
    assert opt.steps_done == at
    assert opt.param_groups is opt.base.param_groups and opt.state is opt.base.state
    _steps(model, opt, at, 35)
    for p, q in zip(model.parameters(), straight):
        assert torch.equal(p, q)


def test_state_dict_contents():
    model = _mlp()
    opt = _small(model)
    _steps(model, opt, 0, 13)
    state = opt.state_dict()
    nino = state["nino"]
    assert nino["steps_done"] == 13 and nino["period"] == 10 and nino["context"] == 5
    assert nino["num_params"] == opt.graph.num_params
    assert torch.equal(nino["history"], opt.history.buffer[:1])  # slot 0 captured at step 12
    assert set(state["state"]) == {0, 1, 2, 3}  # integer-indexed, as any optimizer


def test_load_with_different_period_raises(tmp_path):
    model = _mlp()
    opt = _small(model)
    _steps(model, opt, 0, 13)
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    other = _small(_mlp(), period=20)
    with pytest.raises(ValueError, match="period"):
        other.load_state_dict(torch.load(tmp_path / "o.pt", weights_only=True))
    assert other.steps_done == 0 and len(other.state) == 0


def test_load_for_another_model_raises_and_leaves_optimizer_untouched():
    model = _mlp()
    opt = _small(model)
    _steps(model, opt, 0, 13)
    state = opt.state_dict()
    torch.manual_seed(0)
    wider = nn.Sequential(nn.Linear(4, 9), nn.ReLU(), nn.Linear(9, 3))  # same tensor count, other shapes
    other = _small(wider)
    with pytest.raises(ValueError):
        other.load_state_dict(state)
    # Nothing half-loaded: no Adam moments of the wrong shape were attached to `wider`'s parameters.
    assert other.steps_done == 0
    assert len(other.state) == 0


def test_plain_state_dict_loads_base_state_with_warning():
    model = _mlp()
    opt = _small(model)
    _steps(model, opt, 0, 13)
    state = opt.state_dict()
    del state["nino"]
    fresh = _small(_mlp())
    with pytest.warns(UserWarning, match="no 'nino' entry"):
        fresh.load_state_dict(state)
    assert fresh.steps_done == 0
    assert torch.equal(fresh.state[fresh.param_groups[0]["params"][0]]["exp_avg"],
                       opt.state[model[0].weight]["exp_avg"])


def test_state_dict_hooks_are_called():
    model = _mlp()
    opt = _small(model)
    seen = []
    opt.register_state_dict_pre_hook(lambda o: seen.append("save-pre"))
    opt.register_state_dict_post_hook(lambda o, sd: seen.append("save-post"))
    opt.register_load_state_dict_pre_hook(lambda o, sd: seen.append("load-pre"))
    opt.register_load_state_dict_post_hook(lambda o: seen.append("load-post"))
    _steps(model, opt, 0, 3)
    opt.load_state_dict(opt.state_dict())
    assert seen == ["save-pre", "save-post", "load-pre", "load-post"]


def test_checkpoint_carries_the_positional_encoding(tmp_path):
    """A resumed run must see the LPE the first run used: eigenvectors of repeated eigenvalues are not unique."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = NiNoAdam(model.parameters(), model=model, period=10, max_steps=100)
    assert opt.state_dict()["nino"]["lpe"] is None  # nothing computed yet, nothing saved
    used = opt.graph.lpe
    state = opt.state_dict()
    assert torch.equal(state["nino"]["lpe"], used)
    fresh = NiNoAdam(model.parameters(), model=model, period=10, max_steps=100)
    noisy = used + 1e-3  # stands in for an encoding computed differently in another process
    fresh.graph.lpe = noisy
    fresh.load_state_dict(state)
    assert torch.equal(fresh.graph.lpe, used)
    state["nino"]["lpe"] = torch.zeros(3, 8)
    with pytest.raises(ValueError, match="LPE"):
        fresh.load_state_dict(state)

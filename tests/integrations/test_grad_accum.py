"""Gradient accumulation counts only real optimizer steps: a plain loop and Accelerate's ``accumulate``.

With ``period=10, context=5`` the states are captured before the real steps 2, 4, 6, 8, 10 and real step 10
is the nowcast. A loop that accumulates over N micro-batches calls ``step()`` once per N micro-batches, and
Accelerate's ``AcceleratedOptimizer`` only forwards ``step()`` on the micro-batch that syncs gradients, so
the captured states are five *different* states (never the same state captured again) and the nowcast
happens at real step 10, i.e. micro-batch 10 * N.
"""
import warnings

import pytest
import torch
from torch import nn

from nino_optim import NiNoAdam

PERIOD, CONTEXT, ACCUM, REAL_STEPS = 10, 5, 4, 13
INTERVAL = PERIOD // CONTEXT


class Recorder:
    """Predicts ``newest state + 0.5`` and records the states it was given and the real step it ran on."""

    def __init__(self):
        self.opt = None
        self.calls = []

    def predict(self, graph, states, k):
        self.calls.append({"states": states.clone(), "step": self.opt.steps_done + 1})
        return states[:, -1].float() + 0.5


def setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    rec = Recorder()
    opt = NiNoAdam(model.parameters(), model, nowcaster=rec, period=PERIOD, context=CONTEXT, max_steps=100,
                   lr=1e-2)
    rec.opt = opt
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)) for _ in range(REAL_STEPS * ACCUM)]
    return model, opt, rec, data


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def check_timeline(model, opt, rec, before, after):
    """``before[s]`` / ``after[s]``: flat parameters just before / after real step s (1-based)."""
    assert opt.steps_done == REAL_STEPS
    assert [c["step"] for c in rec.calls] == [PERIOD]  # one nowcast, at real step 10
    states = rec.calls[0]["states"]
    for slot, step in enumerate(range(INTERVAL, PERIOD + 1, INTERVAL)):  # captured before real steps 2..10
        assert torch.equal(states[:, slot], before[step]), f"slot {slot} is not the state before real step {step}"
    assert len({tuple(states[:, i].tolist()) for i in range(CONTEXT)}) == CONTEXT  # no state captured twice
    assert torch.equal(after[PERIOD], before[PERIOD] + 0.5)  # the nowcast replaced real step 10
    for s in range(1, REAL_STEPS + 1):
        if s != PERIOD:
            assert not torch.equal(after[s], before[s])  # every other real step is a base step


def test_plain_loop_with_accumulation():
    model, opt, rec, data = setup()
    before, after = {}, {}
    opt.zero_grad()
    for i, (x, y) in enumerate(data, start=1):
        loss = ((model(x) - y) ** 2).mean() / ACCUM
        loss.backward()
        if i % ACCUM == 0:
            real = i // ACCUM
            before[real] = flat(model)
            opt.step()
            opt.zero_grad()
            after[real] = flat(model)
    check_timeline(model, opt, rec, before, after)


def test_accelerate_accumulate():
    accelerate = pytest.importorskip("accelerate", reason="accelerate not installed (pip install accelerate)")
    from accelerate.state import AcceleratorState, GradientState

    model, opt, rec, data = setup()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = accelerate.Accelerator(gradient_accumulation_steps=ACCUM, cpu=True)
    pmodel, popt = accelerator.prepare(model, opt)
    assert popt.optimizer is opt
    before, after = {}, {}
    steps_seen = []
    for x, y in data:
        with accelerator.accumulate(pmodel):
            loss = ((pmodel(x) - y) ** 2).mean()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                before[opt.steps_done + 1] = flat(model)
            popt.step()
            popt.zero_grad()
            if accelerator.sync_gradients:
                after[opt.steps_done] = flat(model)
            steps_seen.append(opt.steps_done)
    assert steps_seen == [i // ACCUM for i in range(1, len(data) + 1)]  # one real step per ACCUM micro-batches
    check_timeline(model, opt, rec, before, after)
    # accelerate's prepare round-trips the state dict; NiNo's state survives it
    assert popt.state_dict()["nino"]["steps_done"] == REAL_STEPS
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def test_amp_skipped_steps_do_not_count():
    """``GradScaler.step(opt)`` skips ``opt.step()`` when a gradient is inf: no capture, no count."""
    model, opt, rec, data = setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4)
    before, after = {}, {}
    skipped = 0
    for i, (x, y) in enumerate(data[:REAL_STEPS + 3], start=1):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        scaler.scale(loss).backward()
        if i in (3, 7, 11):  # an overflowing batch: this step must be skipped and not counted
            model[0].weight.grad[0, 0] = float("inf")
            skipped += 1
        real = opt.steps_done + 1
        state = flat(model)
        scaler.step(opt)
        scaler.update()
        if opt.steps_done == real:
            before[real], after[real] = state, flat(model)
        else:
            assert torch.equal(flat(model), state)
    assert skipped == 3
    check_timeline(model, opt, rec, before, after)


def test_accelerate_example():
    """examples/accelerate_accum.py at a tiny size: 25 optimizer steps = 100 micro-batches, 2 nowcasts."""
    pytest.importorskip("accelerate", reason="accelerate not installed (pip install accelerate)")
    pytest.importorskip("sklearn", reason="the example's data needs scikit-learn")
    import importlib.util
    from pathlib import Path

    from accelerate.state import AcceleratorState, GradientState

    path = Path(__file__).parents[2] / "examples" / "accelerate_accum.py"
    spec = importlib.util.spec_from_file_location("accelerate_accum_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = example.main(["--steps", "25", "--period", "10", "--accum", "4", "--hidden", "16"])
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    assert result["optimizer_steps"] == 25 and result["micro_batches"] == 100
    assert not [w for w in caught if "skipped" in str(w.message)]


def test_accelerate_save_state_resumes_the_timeline(tmp_path):
    """``accelerator.save_state`` / ``load_state`` carry NiNo's step and history: the resumed run equals the
    straight one bitwise, with its nowcast at real step 10."""
    accelerate = pytest.importorskip("accelerate", reason="accelerate not installed (pip install accelerate)")
    from accelerate.state import AcceleratorState, GradientState

    def run(start, stop, load=None, save_at=None):
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        model, opt, rec, data = setup()
        accelerator = accelerate.Accelerator(gradient_accumulation_steps=ACCUM, cpu=True)
        pmodel, popt = accelerator.prepare(model, opt)
        if load:
            accelerator.load_state(load)
        assert opt.steps_done == start
        for i in range(start * ACCUM, stop * ACCUM):
            x, y = data[i]
            with accelerator.accumulate(pmodel):
                accelerator.backward(((pmodel(x) - y) ** 2).mean())
                popt.step()
                popt.zero_grad()
            if save_at is not None and (i + 1) == save_at * ACCUM:
                accelerator.save_state(str(tmp_path / "ckpt"))
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        return flat(model), opt, rec

    straight, opt_a, rec_a = run(0, REAL_STEPS, save_at=6)
    resumed, opt_b, rec_b = run(6, REAL_STEPS, load=str(tmp_path / "ckpt"))
    assert opt_b.steps_done == REAL_STEPS
    assert [c["step"] for c in rec_b.calls] == [PERIOD]
    assert torch.equal(rec_b.calls[0]["states"], rec_a.calls[0]["states"])
    assert torch.equal(resumed, straight)

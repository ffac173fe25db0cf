"""The history buffer: one preallocated [c, P] tensor, its [P, c] view, where it lives (pinned CPU memory for
CUDA parameters by default), and NiNoAdam's history options."""
import copy
import warnings

import pytest
import torch
from torch import nn

from nino_optim import NiNoAdam
from nino_optim.history import History, history_device_for

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="pinned memory and asynchronous device-to-host copies need CUDA; "
                                                 "this file's CPU tests cover the placement rule and the wait points")


def _params():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, 4, generator=g), torch.randn(4, generator=g), torch.randn(2, 3, generator=g)]


def test_buffer_is_preallocated_slot_major():
    ps = _params()
    h = History(ps, context=5, device="cpu", dtype=torch.float32)
    assert h.buffer.shape == (5, 12 + 4 + 6)
    assert h.buffer.dtype == torch.float32 and h.buffer.device.type == "cpu"
    assert torch.count_nonzero(h.buffer) == 0


def test_capture_writes_one_slot_in_place_and_states_is_a_view():
    ps = _params()
    h = History(ps, context=3, device="cpu", dtype=torch.float32)
    ptr = h.buffer.data_ptr()
    h.capture(ps, 1)
    flat = torch.cat([p.reshape(-1) for p in ps])
    assert torch.equal(h.buffer[1], flat)
    assert torch.count_nonzero(h.buffer[0]) == 0 and torch.count_nonzero(h.buffer[2]) == 0
    assert h.buffer.data_ptr() == ptr  # no reallocation
    states = h.states()
    assert states.shape == (22, 3)
    assert states.data_ptr() == ptr  # a view, not a copy
    assert torch.equal(states[:, 1], flat)


def test_states_oldest_first():
    ps = _params()
    h = History(ps, context=3, device="cpu", dtype=torch.float32)
    for slot in range(3):
        h.capture([p + slot for p in ps], slot)
    flat = torch.cat([p.reshape(-1) for p in ps])
    for slot in range(3):
        assert torch.equal(h.states()[:, slot], flat + slot)


def test_export_restore_round_trip():
    ps = _params()
    h = History(ps, context=4, device="cpu", dtype=torch.float32)
    h.capture(ps, 0)
    h.capture([p * 2 for p in ps], 1)
    saved = h.export(2)
    assert saved.shape == (2, 22)
    h.buffer.fill_(7.0)  # the export is a copy
    assert not torch.equal(saved[0], h.buffer[0])
    fresh = History(ps, context=4, device="cpu", dtype=torch.float32)
    fresh.restore(saved)
    assert torch.equal(fresh.buffer[:2], saved)
    assert torch.count_nonzero(fresh.buffer[2:]) == 0


@pytest.mark.parametrize("shape", [(5, 22), (2, 21), (22,)])
def test_restore_rejects_wrong_shape(shape):
    h = History(_params(), context=4, device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError):
        h.restore(torch.zeros(shape))


def test_float16_capture_casts():
    ps = _params()
    h = History(ps, context=2, device="cpu", dtype=torch.float16)
    h.capture(ps, 0)
    assert h.buffer.dtype == torch.float16
    assert torch.equal(h.buffer[0], torch.cat([p.reshape(-1) for p in ps]).half())


def test_bfloat16_export_restore_round_trip():
    ps = _params()
    h = History(ps, context=3, device="cpu", dtype=torch.bfloat16)
    h.capture(ps, 0)
    h.capture([p * 3 for p in ps], 1)
    flat = torch.cat([p.reshape(-1) for p in ps])
    assert torch.equal(h.states()[:, 1], (flat * 3).bfloat16())
    saved = h.export(2)
    assert saved.dtype == torch.bfloat16 and saved.shape == (2, 22)
    fresh = History(ps, context=3, device="cpu", dtype=torch.bfloat16)
    fresh.restore(saved)
    assert torch.equal(fresh.buffer, h.buffer)


# ------------------------------------------------------------------------------------ where it lives
@pytest.mark.parametrize("param_device, requested, expected", [
    ("cpu", None, ("cpu", False)),            # CPU-only machines: nothing changes
    ("cuda", None, ("cpu", True)),            # accelerator: pinned CPU memory, asynchronous captures
    ("cuda:1", None, ("cpu", True)),
    ("cuda", "cpu", ("cpu", True)),           # an explicit CPU history of CUDA parameters is pinned too
    ("cuda", "cuda", ("cuda", False)),        # an explicit device wins
    ("cuda:0", torch.device("cuda", 1), ("cuda:1", False)),
    ("cpu", "cpu", ("cpu", False)),
    ("mps", None, ("cpu", False)),            # other accelerators: plain CPU memory, blocking copies
    ("meta", None, ("cpu", False)),
])
def test_history_device_for(param_device, requested, expected):
    device, pin = history_device_for(torch.device(param_device), requested)
    assert (device, pin) == (torch.device(expected[0]), expected[1])
    assert isinstance(device, torch.device)


def test_pin_memory_without_cuda_is_plain_cpu_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ps = _params()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no CUDA is not a problem worth a warning
        h = History(ps, context=2, device="cpu", dtype=torch.float32, pin_memory=True)
    assert not h.pinned and not h.buffer.is_pinned()
    h.capture(ps, 1)
    assert torch.equal(h.states()[:, 1], torch.cat([p.reshape(-1) for p in ps]))


@pytest.mark.skipif(CUDA, reason="checks the fallback when page-locked memory cannot be allocated")
def test_pinned_allocation_failure_falls_back_to_plain_memory_with_a_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # pinning is tried and fails: no allocator here
    with pytest.warns(UserWarning, match="could not pin"):
        h = History(_params(), context=2, device="cpu", dtype=torch.float32, pin_memory=True)
    assert not h.pinned and h.buffer.device.type == "cpu"


class _Event:
    """Stands in for a ``torch.cuda.Event`` of a copy in flight: counts the waits on it."""

    def __init__(self):
        self.waits = 0

    def synchronize(self):
        self.waits += 1


@pytest.mark.parametrize("access", ["states", "states_to_cpu", "export", "restore", "capture"])
def test_every_host_access_waits_for_copies_in_flight(access):
    ps = _params()
    h = History(ps, context=2, device="cpu", dtype=torch.float32)
    h.capture(ps, 0)
    event = _Event()
    h._pending.append(event)
    {"states": lambda: h.states(), "states_to_cpu": lambda: h.states("cpu"), "export": lambda: h.export(1),
     "restore": lambda: h.restore(torch.zeros(1, 22)), "capture": lambda: h.capture(ps, 1)}[access]()
    assert event.waits == 1 and h._pending == []  # waited once, then forgotten
    h.states()
    assert event.waits == 1


def test_states_on_its_own_device_is_the_view():
    h = History(_params(), context=2, device="cpu", dtype=torch.float32)
    assert h.states("cpu").data_ptr() == h.buffer.data_ptr()
    assert h.states(torch.device("cpu")).shape == (22, 2)


def _cuda_params():
    return [p.cuda() for p in _params()] + [torch.randn(5, 6, device="cuda").t()]  # one non-contiguous


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pinned_capture_states_export_restore_round_trip(dtype):
    ps = _cuda_params()
    device, pin = history_device_for(ps[0].device)
    h = History(ps, context=3, device=device, dtype=dtype, pin_memory=pin)
    assert h.pinned and h.buffer.is_pinned() and h.buffer.device.type == "cpu"
    expected = []
    for slot in range(3):
        h.capture(ps, slot)
        expected.append(torch.cat([p.reshape(-1) for p in ps]).to(dtype).cpu())
        for p in ps:  # updated in place right after the capture is enqueued: the copy must not see this
            p.add_(1.0)
    for slot in range(3):
        assert torch.equal(h.states()[:, slot], expected[slot])
    on_gpu = h.states("cuda")
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), h.states())
    saved = h.export(2)
    assert saved.device.type == "cpu" and saved.dtype == dtype and torch.equal(saved, torch.stack(expected[:2]))
    fresh = History(ps, context=3, device=device, dtype=dtype, pin_memory=pin)
    fresh.restore(saved.cuda())  # a checkpoint loaded onto the GPU
    assert torch.equal(fresh.buffer[:2], saved)
    h.restore(saved)
    assert torch.equal(h.buffer[:2], saved) and torch.equal(h.buffer[2], expected[2])


# ------------------------------------------------------------------------------------ through NiNoAdam
class _Recorder:
    def __init__(self):
        self.states = []

    def predict(self, graph, states, k):
        self.states.append(states.clone())
        return states[:, -1].float()


def _mlp(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)


def _train(model, opt, steps):
    g = torch.Generator().manual_seed(1)
    dtype = next(model.parameters()).dtype
    x, y = torch.randn(16, 4, generator=g).to(dtype), torch.randn(16, 3, generator=g).to(dtype)
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def test_optimizer_history_is_preallocated_and_never_reallocated():
    model = _mlp()
    opt = NiNoAdam(model.parameters(), model, period=10, context=5, max_steps=50)
    num = sum(p.numel() for p in model.parameters())
    assert opt.history.buffer.shape == (5, num)
    assert opt.history.buffer.dtype == torch.float32
    ptr = opt.history.buffer.data_ptr()
    _train(model, opt, 23)
    assert opt.history.buffer.data_ptr() == ptr
    assert opt.history.buffer.shape == (5, num)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def test_history_device_and_dtype_options_are_honoured():
    model = _mlp()
    rec = _Recorder()
    opt = NiNoAdam(model.parameters(), model, period=10, context=5, max_steps=50, nowcaster=rec,
                   history_device="cpu", history_dtype=torch.float16)
    assert opt.history.buffer.device == torch.device("cpu")
    assert opt.history.buffer.dtype == torch.float16
    _train(model, opt, 1)
    before_call_2 = _flat(model)
    _train(model, opt, 1)  # call 2 captures into slot 0
    assert torch.equal(opt.history.buffer[0], before_call_2.half())
    _train(model, opt, 8)  # through the nowcast at call 10
    assert len(rec.states) == 1
    assert rec.states[0].dtype == torch.float16 and rec.states[0].shape == (opt.graph.num_params, 5)


def test_history_dtype_defaults_to_float64_for_float64_models():
    model = _mlp(torch.float64)
    opt = NiNoAdam(model.parameters(), model, period=10, context=5, max_steps=50)
    assert opt.history.buffer.dtype == torch.float64
    _train(model, opt, 1)
    before_call_2 = _flat(model)
    _train(model, opt, 1)
    assert torch.equal(opt.history.buffer[0], before_call_2)  # lossless


def test_history_dtype_float32_by_default():
    model = _mlp()
    opt = NiNoAdam(model.parameters(), model, period=10, context=5, max_steps=50)
    assert opt.history.buffer.dtype == torch.float32
    assert opt.history.buffer.device == next(model.parameters()).device


def test_cpu_default_history_is_plain_float32_cpu_memory():
    model = _mlp()
    opt = NiNoAdam(model.parameters(), model, period=10, context=5, max_steps=50)
    assert opt.history.buffer.device == torch.device("cpu") and opt.history.buffer.dtype == torch.float32
    assert not opt.history.pinned and not opt.history.buffer.is_pinned()


def test_bfloat16_history_nowcasts_and_resumes_exactly():
    """A bfloat16 history through a real nowcaster (Linefit casts to float32) and a checkpoint round trip."""
    def run(model, opt, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            x, y = torch.randn(16, 4, generator=g), torch.randn(16, 3, generator=g)
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()

    make = lambda m: NiNoAdam(m.parameters(), m, period=10, context=5, max_steps=50, nowcaster="linefit",
                              history_dtype=torch.bfloat16)
    model = _mlp()
    opt = make(model)
    run(model, opt, 14, seed=1)  # through the nowcast at call 10, then two captures of the next cycle
    assert all(torch.isfinite(p).all() for p in model.parameters())
    state = copy.deepcopy(opt.state_dict())
    assert state["nino"]["history"].dtype == torch.bfloat16 and state["nino"]["history"].shape[0] == 2
    model2 = _mlp()
    model2.load_state_dict(model.state_dict())
    opt2 = make(model2)
    opt2.load_state_dict(state)
    run(model, opt, 10, seed=2)  # through the nowcast at call 20
    run(model2, opt2, 10, seed=2)
    assert torch.equal(_flat(model), _flat(model2))


@needs_cuda
def test_cuda_default_history_is_pinned_cpu_and_takes_no_gpu_memory():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256)).cuda()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    opt = NiNoAdam(model.parameters(), model, period=10, context=5, max_steps=50, nowcaster=_Recorder())
    assert torch.cuda.memory_allocated() - before < opt.history.buffer.nbytes // 2  # no history on the GPU
    assert opt.history.buffer.device.type == "cpu" and opt.history.pinned
    assert opt.history.buffer.dtype == torch.float32
    x = torch.randn(32, 256, device="cuda")
    for step in range(1, 11):
        if step == 2:
            expected = _flat(model).cpu()  # call 2 captures slot 0
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    assert torch.equal(opt.history.states()[:, 0], expected)
    assert torch.equal(opt.state_dict()["nino"]["history"], opt.history.buffer[:0])
    explicit = NiNoAdam(model.parameters(), model, period=10, context=5, max_steps=50, nowcaster=_Recorder(),
                        history_device="cuda")
    assert explicit.history.buffer.is_cuda and not explicit.history.pinned  # an explicit device wins

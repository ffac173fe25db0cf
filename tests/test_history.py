"""The history buffer: one preallocated [c, P] tensor, its [P, c] view, and NiNoAdam's history options."""
import pytest
import torch
from torch import nn

from nino_optim import NiNoAdam
from nino_optim.history import History


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

"""NiNoAdam as a drop-in torch.optim.Optimizer: timeline, schedules, optimizer API, bad input, failed nowcasts,
writes."""
import copy
import math
import warnings

import pytest
import torch
from torch import nn

from nino_optim import NiNoAdam
from nino_optim.schedule import k_schedule

PERIOD, CONTEXT, MAX_STEPS = 10, 5, 50


# ------------------------------------------------------------------------------------------------ helpers
def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 4, generator=g), torch.randn(16, 3, generator=g)


X, Y = batch()


def make(model, params=None, **kw):
    kw = {"period": PERIOD, "context": CONTEXT, "max_steps": MAX_STEPS, **kw}
    return NiNoAdam(model.parameters() if params is None else params, model, **kw)


def loss_fn(model):
    return ((model(X) - Y) ** 2).mean()


def train_step(model, opt):
    opt.zero_grad()
    loss = loss_fn(model)
    loss.backward()
    opt.step()
    return loss


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


class Recorder:
    """A nowcaster that records what it is given and predicts ``newest state + shift``."""

    def __init__(self, shift=0.5):
        self.shift = shift
        self.calls = []

    def predict(self, graph, states, k):
        self.calls.append({"states": states.clone(), "k": k, "graph": graph})
        return states[:, -1].float() + self.shift


class Faulty:
    """A nowcaster that misbehaves (``mode``) until ``fixed`` is set, then predicts ``newest + 0.25``."""

    def __init__(self, mode):
        self.mode, self.fixed, self.calls = mode, False, 0

    def predict(self, graph, states, k):
        self.calls += 1
        good = states[:, -1].float() + 0.25
        if self.fixed:
            return good
        if self.mode == "nan":
            good[3] = float("nan")
            return good
        if self.mode == "inf":
            good[-1] = float("inf")
            return good
        if self.mode == "raise":
            raise RuntimeError("nowcaster exploded")
        if self.mode == "shape":
            return torch.cat([good, good[:1]])
        if self.mode == "2d":
            return good[:, None]
        if self.mode == "none":
            return None
        raise AssertionError(self.mode)


def recorded(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, caught


# ------------------------------------------------------------------------------------------------ 1. timeline
def test_capture_calls_and_states_passed_to_nowcaster():
    model = mlp()
    rec = Recorder()
    opt = make(model, nowcaster=rec)
    captured_before = {}
    for call in range(1, PERIOD + 1):
        before = flat(model)
        buffer_before = opt.history.buffer.clone()
        if call % 2 == 0:
            captured_before[call] = before
        train_step(model, opt)
        if call < PERIOD:
            if call % 2 == 0:  # captured into slot call/2 - 1 the values from before the base step
                slot = call // 2 - 1
                assert torch.equal(opt.history.buffer[slot], before)
                others = [s for s in range(CONTEXT) if s != slot]
                assert torch.equal(opt.history.buffer[others], buffer_before[others])
            else:  # odd calls capture nothing
                assert torch.equal(opt.history.buffer, buffer_before)
    assert sorted(captured_before) == [2, 4, 6, 8, 10]
    assert len(rec.calls) == 1
    states = rec.calls[0]["states"]
    assert states.shape == (opt.graph.num_params, CONTEXT)
    expected = torch.stack([captured_before[c] for c in (2, 4, 6, 8, 10)], dim=1)
    assert torch.equal(states, expected)
    assert rec.calls[0]["graph"] is opt.graph
    # The nowcast's prediction is what the parameters are now.
    assert torch.equal(flat(model), expected[:, -1] + 0.5)


def test_nowcast_call_replaces_base_step():
    model = mlp()
    opt = make(model, nowcaster=Recorder())
    p = model[0].weight
    for call in range(1, 10):
        train_step(model, opt)
        assert opt.state[p]["step"].item() == call
    train_step(model, opt)  # call 10: the nowcast
    assert opt.steps_done == 10
    assert opt.state[p]["step"].item() == 9
    for _ in range(10):
        train_step(model, opt)
    assert opt.steps_done == 20
    assert opt.state[p]["step"].item() == 18


def test_need_grads_false_exactly_before_nowcast_calls():
    model = mlp()
    opt = make(model, nowcaster=Recorder())
    flags = []
    for _ in range(35):
        flags.append(opt.need_grads)
        train_step(model, opt)
    assert [call for call, flag in enumerate(flags, start=1) if not flag] == [10, 20, 30]


def test_nowcast_without_backward_when_need_grads_is_false():
    model = mlp()
    rec = Recorder()
    opt = make(model, nowcaster=rec)
    for _ in range(9):
        train_step(model, opt)
    assert not opt.need_grads
    opt.zero_grad(set_to_none=True)
    opt.step()  # no gradients at all: fine on a nowcast call
    assert len(rec.calls) == 1 and opt.steps_done == 10


def test_k_follows_k_schedule():
    model = mlp()
    rec = Recorder(shift=0.0)
    opt = make(model, nowcaster=rec)
    assert opt.k_schedule == k_schedule(MAX_STEPS, PERIOD) == [40, 25, 13, 5, 1]
    for _ in range(70):
        train_step(model, opt)
    # Call 50 (the last of max_steps) takes a base step; past max_steps k stays at 1.
    assert [c["k"] for c in rec.calls] == [40, 25, 13, 5, 1, 1]


def test_the_last_step_before_max_steps_is_a_base_step_unless_final_nowcast():
    for final, expected in ((False, [10, 20, 30, 40, 60]), (True, [10, 20, 30, 40, 50, 60])):
        model = mlp()
        opt = make(model, nowcaster=Recorder(shift=0.0), final_nowcast=final)
        nowcasts = []
        for call in range(1, 61):
            if not opt.need_grads:
                nowcasts.append(call)
            train_step(model, opt)
        assert nowcasts == expected
    # Without final_nowcast, the last 10 calls up to max_steps are Adam's: from equal states, equal steps.
    opt = make(model := mlp(), nowcaster=Recorder(shift=0.0))
    for _ in range(40):
        train_step(model, opt)
    ref = mlp()
    ref.load_state_dict(model.state_dict())
    adam = torch.optim.Adam(ref.parameters(), lr=opt.param_groups[0]["lr"])
    adam.load_state_dict(copy.deepcopy(opt.base.state_dict()))  # its own moments, equal to NiNoAdam's
    for _ in range(10):
        train_step(model, opt)
        train_step(ref, adam)
    assert torch.equal(flat(model), flat(ref))


def test_max_horizon_from_nowcaster_and_argument():
    class WithHorizon(Recorder):
        max_horizon = 20

    model = mlp()
    assert make(model, nowcaster=WithHorizon()).k_schedule == k_schedule(MAX_STEPS, PERIOD, 20)
    assert make(model, nowcaster=WithHorizon(), max_horizon=9).k_schedule == k_schedule(MAX_STEPS, PERIOD, 9)
    assert make(model, nowcaster=Recorder(), k_decay=0).k_schedule == [40] * 5


# ------------------------------------------------------------------------------------------------ 2. schedules
def _run_with_lr(lr_at, steps=20, **kw):
    """Train with the learning rate of step s (0-based) set to lr_at(s); returns (model, optimizer, recorder)."""
    model = mlp()
    rec = kw.pop("nowcaster", None) or Recorder(shift=0.5)
    opt = make(model, lr=lr_at(0), nowcaster=rec, **kw)
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        train_step(model, opt)
    return model, opt, rec


def test_schedule_aware_changes_nothing_at_a_constant_rate():
    aware, _, rec_aware = _run_with_lr(lambda s: 0.01, steps=30)
    plain, _, rec_plain = _run_with_lr(lambda s: 0.01, steps=30, schedule_aware=False)
    assert torch.equal(flat(aware), flat(plain))
    assert [c["k"] for c in rec_aware.calls] == [c["k"] for c in rec_plain.calls] == [40, 25, 13]


def test_schedule_aware_shortens_the_jump_by_the_coming_learning_rate_mass():
    from nino_optim.schedule import lr_mass_ratio

    lr_at = lambda s: 0.01 * (1 - s / 40)  # linear decay to zero at step 40
    model, opt, rec = _run_with_lr(lr_at, steps=19)  # the next call (20) is the second nowcast
    before = opt.history.states()[:, -1].clone()  # captured on call 18; call 20 captures again
    for g in opt.param_groups:
        g["lr"] = lr_at(19)
    train_step(model, opt)
    lrs = [lr_at(s) for s in (11, 13, 15, 17, 19)]  # the rate set for calls 12, 14, ..., 20
    k = 25  # the k-decay's second value
    scaled = k * lr_mass_ratio(lrs, PERIOD // CONTEXT, k * PERIOD // CONTEXT)
    assert 1 < scaled < k
    asked = math.ceil(scaled)
    assert rec.calls[-1]["k"] == asked
    newest = rec.calls[-1]["states"][:, -1]
    assert not torch.equal(newest, before)
    assert torch.allclose(flat(model), newest + 0.5 * scaled / asked)  # that part of the way to newest + 0.5


def test_schedule_aware_makes_no_jump_at_a_zero_rate():
    lr_at = lambda s: max(0.0, 0.01 * (1 - s / 9))  # zero from step 9: the nowcast call 10 has rate 0
    model, opt, rec = _run_with_lr(lr_at, steps=10)
    assert len(rec.calls) == 1 and rec.calls[0]["k"] == 1
    assert torch.equal(flat(model), rec.calls[0]["states"][:, -1])  # parameters stay where they are


def test_schedule_aware_off_jumps_the_full_k_decay_under_a_decaying_rate():
    lr_at = lambda s: 0.01 * (1 - s / 40)
    model, opt, rec = _run_with_lr(lr_at, steps=20, schedule_aware=False)
    assert [c["k"] for c in rec.calls] == [40, 25]
    assert torch.allclose(flat(model), rec.calls[-1]["states"][:, -1] + 0.5)


def test_capture_learning_rates_survive_a_checkpoint():
    lr_at = lambda s: 0.01 * (1 - s / 40)
    model, opt, rec = _run_with_lr(lr_at, steps=16)
    state = opt.state_dict()
    assert state["nino"]["capture_lrs"] == pytest.approx([lr_at(s) for s in (11, 13, 15)])
    model2 = mlp()
    model2.load_state_dict(model.state_dict())
    opt2 = make(model2, lr=0.5, nowcaster=Recorder(shift=0.5))  # another rate now: the saved ones must count
    opt2.load_state_dict(copy.deepcopy(state))  # as from a file: no tensor shared with the running optimizer
    for s in range(16, 20):
        for o in (opt, opt2):
            for g in o.param_groups:
                g["lr"] = lr_at(s)
        train_step(model, opt)
        train_step(model2, opt2)
    assert torch.equal(flat(model), flat(model2))


# ------------------------------------------------------------------------------------------------ 3. drop-in
def test_is_an_optimizer_sharing_the_base_containers():
    model = mlp()
    opt = make(model)
    assert isinstance(opt, torch.optim.Optimizer)
    assert isinstance(opt.base, torch.optim.Adam)
    assert opt.param_groups is opt.base.param_groups
    assert opt.state is opt.base.state
    assert opt.defaults is opt.base.defaults
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 4


def test_base_steps_equal_plain_adam_bitwise():
    model, ref = mlp(), mlp()
    opt = make(model, nowcaster=Recorder(), lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    for _ in range(9):
        train_step(model, opt)
        train_step(ref, ref_opt)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


def _no_scheduler_order_warning(caught):
    msgs = [str(w.message) for w in caught]
    assert not [m for m in msgs if "lr_scheduler.step()" in m], msgs


def test_steplr_drives_base_lr():
    model = mlp()
    opt = make(model, lr=0.1, nowcaster=Recorder())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)

    def loop():
        lrs = []
        for _ in range(12):
            train_step(model, opt)
            sched.step()
            lrs.append(opt.base.param_groups[0]["lr"])
        return lrs

    lrs, caught = recorded(loop)
    _no_scheduler_order_warning(caught)
    assert lrs == pytest.approx([0.1] * 4 + [0.05] * 5 + [0.025] * 3)
    assert opt.base.param_groups[0]["lr"] == pytest.approx(0.025)


def test_onecyclelr_drives_base_lr_like_plain_adam():
    model, ref = mlp(), mlp()
    opt = make(model, nowcaster=Recorder())
    ref_opt = torch.optim.Adam(ref.parameters())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=30)
    ref_sched = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.1, total_steps=30)
    assert opt.base.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"] != 1e-3

    def loop():
        for _ in range(25):
            train_step(model, opt)
            sched.step()
            train_step(ref, ref_opt)
            ref_sched.step()
            assert opt.base.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
            assert opt.base.param_groups[0]["betas"] == ref_opt.param_groups[0]["betas"]

    _, caught = recorded(loop)
    _no_scheduler_order_warning(caught)
    assert opt.steps_done == 25


def test_grad_scaler_steps_through_nowcast():
    model = mlp()
    rec = Recorder()
    opt = make(model, nowcaster=rec)
    scaler = torch.amp.GradScaler("cpu")
    for call in range(1, 13):
        opt.zero_grad()
        scaler.scale(loss_fn(model)).backward()
        if call == 10:
            newest = flat(model)
        scaler.step(opt)
        scaler.update()
        if call == 10:
            assert torch.equal(flat(model), newest + 0.5)
    assert opt.steps_done == 12 and len(rec.calls) == 1


def test_grad_scaler_inf_step_is_skipped_and_not_counted():
    model = mlp()
    opt = make(model, nowcaster=Recorder())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)

    def scaled_step(inf=False):
        opt.zero_grad()
        scaler.scale(loss_fn(model)).backward()
        if inf:
            model[0].weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()

    scaled_step()
    assert opt.steps_done == 1
    params, buffer = flat(model), opt.history.buffer.clone()
    adam_step = opt.state[model[0].weight]["step"].clone()
    scaled_step(inf=True)  # would be call 2, a capture call
    assert scaler.get_scale() == 2.0 ** 9  # the scaler saw the inf
    assert opt.steps_done == 1
    assert torch.equal(flat(model), params)
    assert torch.equal(opt.history.buffer, buffer)  # no capture
    assert torch.equal(opt.state[model[0].weight]["step"], adam_step)
    assert opt.need_grads
    scaled_step()  # now call 2 happens and captures
    assert opt.steps_done == 2
    assert torch.equal(opt.history.buffer[0], params)


def test_grad_scaler_inf_on_nowcast_call_defers_nowcast():
    model = mlp()
    rec = Recorder()
    opt = make(model, nowcaster=rec)
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(9):
        opt.zero_grad()
        scaler.scale(loss_fn(model)).backward()
        scaler.step(opt)
        scaler.update()
    opt.zero_grad()
    scaler.scale(loss_fn(model)).backward()
    model[2].bias.grad[0] = float("nan")
    scaler.step(opt)
    scaler.update()
    assert opt.steps_done == 9 and not rec.calls and not opt.need_grads
    newest = flat(model)
    opt.zero_grad()
    scaler.scale(loss_fn(model)).backward()
    scaler.step(opt)
    scaler.update()
    assert opt.steps_done == 10 and len(rec.calls) == 1
    assert torch.equal(flat(model), newest + 0.5)


def test_closure_loss_returned_on_every_call_including_nowcast():
    model = mlp()
    rec = Recorder()
    opt = make(model, nowcaster=rec)
    evaluations = []

    def closure():
        opt.zero_grad()
        loss = loss_fn(model)
        loss.backward()
        evaluations.append(loss.detach())
        return loss

    for call in range(1, 12):
        newest = flat(model)
        out = opt.step(closure)
        assert len(evaluations) == call  # evaluated exactly once per call
        assert out is not None and torch.equal(out.detach(), evaluations[-1])
        if call == 10:
            assert len(rec.calls) == 1
            assert torch.equal(flat(model), newest + 0.5)
    assert opt.steps_done == 11


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    model = mlp()
    opt = make(model)
    loss_fn(model).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    opt.zero_grad(set_to_none=set_to_none)
    for p in model.parameters():
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad is not None and torch.count_nonzero(p.grad) == 0


def _check_added_group_trained_and_nowcast(as_generator):
    model = mlp()
    opt = make(model, params=model[0].parameters(), nowcaster=Recorder())
    groups = opt.param_groups
    new = model[2].parameters() if as_generator else list(model[2].parameters())
    opt.add_param_group({"params": new, "lr": 0.01})
    assert opt.param_groups is groups is opt.base.param_groups
    assert len(opt.base.param_groups) == 2 and opt.base.param_groups[1]["lr"] == 0.01
    assert [id(p) for p in opt.base.param_groups[1]["params"]] == [id(p) for p in model[2].parameters()]
    before = snapshot(model)
    train_step(model, opt)
    for (name, p), q in zip(model.named_parameters(), before):
        assert not torch.equal(p, q), name  # the new group is trained by the base
    for _ in range(8):
        train_step(model, opt)
    newest = flat(model)
    train_step(model, opt)  # nowcast writes both groups
    assert torch.equal(flat(model), newest + 0.5)


def test_add_param_group_with_a_model_parameter():
    _check_added_group_trained_and_nowcast(as_generator=False)


def test_add_param_group_with_a_parameters_generator():
    # `opt.add_param_group({"params": layer.parameters()})` is the usual idiom (e.g. unfreezing a layer);
    # the parameters must reach the base optimizer, not an exhausted generator.
    _check_added_group_trained_and_nowcast(as_generator=True)


def test_add_param_group_with_a_foreign_parameter_raises():
    model = mlp()
    opt = make(model, params=model[0].parameters())
    with pytest.raises(ValueError, match="not a parameter of `model`"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(3))]})
    assert len(opt.param_groups) == 1 and len(opt.base.param_groups) == 1


def test_base_class_adamw_gets_weight_decay():
    model, ref = mlp(), mlp()
    opt = make(model, base=torch.optim.AdamW, lr=0.01, weight_decay=0.05, nowcaster=Recorder())
    assert type(opt.base) is torch.optim.AdamW
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[0]["lr"] == 0.01
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.01, weight_decay=0.05)
    for _ in range(9):
        train_step(model, opt)
        train_step(ref, ref_opt)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("same_params", [False, True])
def test_base_instance_sgd(same_params):
    model, ref = mlp(), mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = make(model, params=list(model.parameters()) if same_params else None, base=sgd, nowcaster=Recorder())
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    assert opt.base is sgd and opt.param_groups is sgd.param_groups and opt.state is sgd.state
    for _ in range(9):
        train_step(model, opt)
        train_step(ref, ref_opt)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    assert "momentum_buffer" in opt.state[model[0].weight]
    newest = flat(model)
    train_step(model, opt)
    assert torch.equal(flat(model), newest + 0.5)


def test_base_instance_with_different_params_raises():
    model = mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="differ"):
        make(model, params=model[0].parameters(), base=sgd)


def test_step_hooks_are_called():
    model = mlp()
    opt = make(model, nowcaster=Recorder())
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(("pre", o.steps_done)))
    opt.register_step_post_hook(lambda o, a, k: seen.append(("post", o.steps_done)))
    for _ in range(10):
        train_step(model, opt)
    assert seen == [x for i in range(10) for x in (("pre", i), ("post", i + 1))]


# ------------------------------------------------------------------------------------------------ 4. bad input
def test_parameter_not_in_model_raises():
    model = mlp()
    foreign = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="not a parameter of `model`"):
        NiNoAdam(list(model.parameters()) + [foreign], model, period=PERIOD, context=CONTEXT, max_steps=MAX_STEPS)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        NiNoAdam([foreign], model, period=PERIOD, context=CONTEXT, max_steps=MAX_STEPS)


@pytest.mark.parametrize("kw, match", [
    ({"period": 10, "context": 3}, "multiple of context"),
    ({"period": 0}, "period"),
    ({"period": -10}, "period"),
    ({"context": 0}, "context"),
    ({"context": -5}, "context"),
    ({"max_steps": 0}, "max_steps"),
    ({"max_steps": -100}, "max_steps"),
    ({"max_steps": True}, "max_steps"),
    ({"max_steps": 1e4}, "max_steps"),
    ({"max_horizon": 0}, "max_horizon"),
    ({"max_horizon": -3}, "max_horizon"),
    ({"max_horizon": 2.5}, "max_horizon"),
    ({"max_horizon": 41}, "at most 40"),  # the default nowcaster predicts at most 40 spacings ahead
    ({"k_decay": -1.0}, "k_decay"),
    ({"k_decay": float("nan")}, "k_decay"),
    ({"k_decay": "2"}, "k_decay"),
    ({"lr": -1e-3}, "learning rate"),  # the base optimizer's own checks
    ({"betas": (0.9, 1.5)}, "beta"),
    ({"eps": -1.0}, "epsilon"),
])
def test_bad_arguments_raise_value_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        make(mlp(), **kw)


@pytest.mark.parametrize("kw", [{"schedule_aware": "yes"}, {"lpe": None}, {"reset_base_state": 1},
                                {"history_dtype": torch.int64}, {"history_dtype": "float16"}])
def test_arguments_of_the_wrong_type_raise_type_errors(kw):
    with pytest.raises(TypeError, match=next(iter(kw))):
        make(mlp(), **kw)


def test_period_not_multiple_of_context_message():
    with pytest.raises(ValueError, match="multiple of context"):
        make(mlp(), period=12, context=5)


def test_unknown_nowcaster_spec_lists_accepted_specs():
    with pytest.raises(ValueError) as info:
        make(mlp(), nowcaster="no-such-nowcaster")
    assert "linefit+" in str(info.value)
    assert "no-such-nowcaster" in str(info.value)


def test_max_steps_none_warns_once():
    model = mlp()
    opt, caught = recorded(lambda: NiNoAdam(model.parameters(), model, period=PERIOD, context=CONTEXT))
    user = [w for w in caught if issubclass(w.category, UserWarning)]
    assert len(user) == 1, [str(w.message) for w in caught]
    assert "max_steps" in str(user[0].message)
    assert opt.k_schedule == k_schedule(10_000, PERIOD)


def test_no_warning_when_max_steps_given():
    model = mlp()
    _, caught = recorded(lambda: make(model))
    assert not caught, [str(w.message) for w in caught]


# ------------------------------------------------------------------------------------------------ 5. failed nowcasts
@pytest.mark.parametrize("mode", ["nan", "inf", "raise", "shape", "2d", "none"])
def test_failed_nowcast_leaves_params_and_training_goes_on(mode):
    model = mlp()
    nowcaster = Faulty(mode)
    opt = make(model, nowcaster=nowcaster)
    for _ in range(9):
        train_step(model, opt)
    before = snapshot(model)
    adam_before = {k: v.clone() for k, v in opt.state[model[0].weight].items()}
    _, caught = recorded(lambda: train_step(model, opt))
    assert nowcaster.calls == 1 and opt.steps_done == 10
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "skipped" in str(caught[0].message)
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)
    for key, value in opt.state[model[0].weight].items():
        assert torch.equal(value, adam_before[key])
    # Training continues: the next call is a base step, the next nowcast applies once the nowcaster is fixed.
    nowcaster.fixed = True
    train_step(model, opt)
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before))
    for _ in range(8):
        train_step(model, opt)
    newest = flat(model)
    _, caught = recorded(lambda: train_step(model, opt))
    assert not caught
    assert nowcaster.calls == 2 and opt.steps_done == 20
    assert torch.equal(flat(model), newest + 0.25)


def test_failed_nowcast_warning_names_the_reason():
    model = mlp()
    opt = make(model, nowcaster=Faulty("raise"))
    for _ in range(9):
        train_step(model, opt)
    with pytest.warns(UserWarning, match="nowcaster exploded"):
        train_step(model, opt)


# ------------------------------------------------------------------------------------------------ 6. frozen, tied, in place
@pytest.mark.parametrize("pass_frozen", [True, False])
def test_frozen_params_never_changed(pass_frozen):
    model = mlp()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    params = model.parameters() if pass_frozen else [p for p in model.parameters() if p.requires_grad]
    opt = make(model, params=params, nowcaster=Recorder(shift=1.0))
    for _ in range(9):
        train_step(model, opt)
    newest = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_step(model, opt)
    assert torch.equal(model[0].weight, frozen)
    for name, p in model.named_parameters():
        if name != "0.weight":
            assert torch.equal(p, newest[name] + 1.0), name
    for _ in range(10):
        train_step(model, opt)
    assert torch.equal(model[0].weight, frozen)


def test_params_not_given_to_the_optimizer_are_not_written():
    model = mlp()
    opt = make(model, params=model[2].parameters(), nowcaster=Recorder(shift=1.0))
    initial = snapshot(model)
    for _ in range(9):
        train_step(model, opt)
    newest = flat(model)
    train_step(model, opt)
    assert torch.equal(model[0].weight, initial[0]) and torch.equal(model[0].bias, initial[1])
    n0 = initial[0].numel() + initial[1].numel()
    assert torch.equal(flat(model)[n0:], newest[n0:] + 1.0)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 4, bias=False)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_tied_params_appear_once_and_model_still_works():
    model = Tied()
    rec = Recorder()
    opt = make(model, nowcaster=rec)
    with pytest.warns(UserWarning, match="shared with an earlier layer"):  # the user is told where it went
        assert [info.name for info in opt.graph.params] == ["a.weight", "b.bias"]
    assert opt.graph.num_params == 16 + 4
    assert opt.history.buffer.shape == (CONTEXT, 20)
    x, y = X, torch.randn(16, 4, generator=torch.Generator().manual_seed(2))
    losses = []
    for call in range(1, 21):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        if call == 20:
            newest = torch.cat([model.a.weight.detach().reshape(-1), model.b.bias.detach().reshape(-1)])
        opt.step()
        losses.append(loss.item())
    assert model.a.weight is model.b.weight
    assert len(rec.calls) == 2
    assert torch.equal(model.b.weight.reshape(-1), newest[:16] + 0.5)
    assert torch.equal(model.b.bias, newest[16:] + 0.5)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_writes_are_in_place():
    model = mlp()
    opt = make(model, nowcaster=Recorder())
    params = list(model.parameters())
    ptrs = [p.data_ptr() for p in params]
    aliases = [p.detach() for p in params]  # share storage with the parameters
    data_objs = [p.data for p in params]
    for _ in range(9):
        train_step(model, opt)
    newest = flat(model)
    train_step(model, opt)
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert [p.data_ptr() for p in model.parameters()] == ptrs
    assert [p.data.data_ptr() for p in model.parameters()] == ptrs
    # Views taken before the nowcast see the written values: nothing was rebound.
    assert torch.equal(torch.cat([a.reshape(-1) for a in aliases]), newest + 0.5)
    assert torch.equal(torch.cat([d.reshape(-1) for d in data_objs]), newest + 0.5)


@pytest.mark.parametrize("reset", [False, True])
def test_reset_base_state(reset):
    model = mlp()
    opt = make(model, nowcaster=Recorder(), reset_base_state=reset)
    for _ in range(10):
        train_step(model, opt)
    for p in model.parameters():
        if reset:
            assert len(opt.state.get(p, {})) == 0
        else:
            assert opt.state[p]["step"].item() == 9 and opt.state[p]["exp_avg"].abs().sum() > 0
    train_step(model, opt)
    assert opt.state[model[0].weight]["step"].item() == (1 if reset else 10)


class _DataDependent(nn.Module):
    """Symbolic tracing cannot follow a branch on the input's shape; tracing with example inputs can."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if x.shape[-1] == 4:  # control flow on a shape: a Proxy to symbolic tracing, an int with inputs
            h = h * 1.0
        return self.fc2(h)


def test_graph_is_built_from_the_first_batch_when_tracing_needs_inputs():
    model = _DataDependent()
    opt = NiNoAdam(model.parameters(), model=model, period=10, context=5, max_steps=100)
    assert not opt._graph.ready  # the input-free trace was imperfect: waiting for a batch
    x = torch.randn(16, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the graph from the batch is clean: no warning at the nowcast
        for _ in range(10):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    assert opt._graph.ready and opt.steps_done == 10
    graph = opt.graph
    assert graph.fallback == {} and int(graph.placed_mask.sum()) == graph.num_params
    # fc2 reads the 8 neurons that fc1 writes (a chain, as the data really flows)
    fc1_out = set(graph.edge_index[1, graph.param_edge[:32]].tolist())
    fc2_in = set(graph.edge_index[0, graph.param_edge[40:64]].tolist())
    assert fc1_out == fc2_in and len(fc1_out) == 8


def test_graph_without_any_forward_pass_uses_the_input_free_trace_and_warns():
    model = _DataDependent()
    opt = NiNoAdam(model.parameters(), model=model, period=10, context=5, max_steps=100)
    with pytest.warns(UserWarning, match="neural graph"):
        graph = opt.graph
    assert graph.num_params == sum(p.numel() for p in model.parameters())


def test_graph_problems_are_reported_at_the_first_step_not_at_the_first_nowcast():
    class Opaque(nn.Module):  # a bilinear form: no rule places its weight, so it falls back
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.bil = nn.Bilinear(3, 3, 3)

        def forward(self, x):
            h = self.fc(x)
            return self.bil(h, h)

    model = Opaque()
    opt = NiNoAdam(model.parameters(), model=model, period=1000, context=5, max_steps=10_000)
    x = torch.randn(8, 4)
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    with pytest.warns(UserWarning, match=r"neural graph of Opaque.*opt\.graph\.summary\(\)"):
        opt.step()
    assert opt.steps_done == 1 and opt._graph.ready
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: later steps are silent
        for _ in range(3):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()

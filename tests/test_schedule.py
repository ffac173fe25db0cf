"""The official timeline: capture slots, nowcast calls and the k-decay schedule (nino_optim.schedule)."""
import pytest

import math

from nino_optim.schedule import (capture_slot, filled_slots, horizon_at, k_schedule, lr_mass_ratio, scaled_horizon,
                                 validate_timeline)


# Values computed with the official code: round(linspace(40**(1/2), 1, max_steps // 1000) ** 2).
@pytest.mark.parametrize("max_steps, expected", [
    (10_000, [40, 33, 26, 21, 16, 11, 8, 5, 3, 1]),
    (15_000, [40, 35, 31, 27, 23, 20, 16, 13, 11, 8, 6, 5, 3, 2, 1]),
    (20_000, [40, 37, 33, 30, 27, 24, 22, 19, 17, 14, 12, 11, 9, 7, 6, 4, 3, 2, 2, 1]),
    (5_000, [40, 25, 13, 5, 1]),
    (1_999, [40]),
])
def test_k_schedule_matches_official_values(max_steps, expected):
    assert k_schedule(max_steps, 1000) == expected


def test_k_schedule_returns_python_ints():
    assert all(type(k) is int for k in k_schedule(10_000, 1000))


def test_k_schedule_scales_with_period():
    assert k_schedule(50, 10) == [40, 25, 13, 5, 1]


def test_k_schedule_power_zero_keeps_k_at_max():
    assert k_schedule(5_000, 1000, max_horizon=40, power=0) == [40] * 5


def test_k_schedule_custom_max_horizon_starts_there_and_ends_at_one():
    ks = k_schedule(10_000, 1000, max_horizon=20)
    assert ks[0] == 20 and ks[-1] == 1
    assert all(a >= b for a, b in zip(ks, ks[1:]))


def test_horizon_at_follows_schedule_then_holds_last_value():
    sched = k_schedule(5_000, 1000)
    assert [horizon_at(c, sched, 1000) for c in (1000, 2000, 3000, 4000, 5000)] == sched
    # Past the planned end the last value (1) is used.
    assert horizon_at(6000, sched, 1000) == 1
    assert horizon_at(100_000, sched, 1000) == 1
    assert horizon_at(2000, [40], 1000) == 40


def test_capture_slots_period_1000_context_5():
    captured = {c: capture_slot(c, 200, 5) for c in range(1, 2201) if capture_slot(c, 200, 5) is not None}
    assert sorted(captured) == [200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2200]
    assert [captured[c] for c in (200, 400, 600, 800, 1000)] == [0, 1, 2, 3, 4]
    assert [captured[c] for c in (1200, 1400, 1600, 1800, 2000, 2200)] == [0, 1, 2, 3, 4, 0]
    # The last slot (the nowcast call) is filled exactly on multiples of the period.
    assert [c for c, s in captured.items() if s == 4] == [1000, 2000]


def test_filled_slots():
    assert filled_slots(0, 200, 5) == 0
    assert filled_slots(199, 200, 5) == 0
    assert filled_slots(200, 200, 5) == 1
    assert filled_slots(999, 200, 5) == 4
    assert filled_slots(1000, 200, 5) == 0  # the cycle ended with the nowcast
    assert filled_slots(1300, 200, 5) == 1


def test_validate_timeline_returns_interval():
    assert validate_timeline(1000, 5) == 200
    assert validate_timeline(10, 5) == 2
    assert validate_timeline(5, 5) == 1


@pytest.mark.parametrize("period, context", [(10, 3), (0, 5), (-10, 5), (10, 0), (10, -5), (10.0, 5), (True, 1)])
def test_validate_timeline_rejects_bad_values(period, context):
    with pytest.raises(ValueError):
        validate_timeline(period, context)


# ------------------------------------------------------------------------------------- learning-rate mass
def test_lr_mass_ratio_is_exactly_one_at_a_constant_rate():
    assert lr_mass_ratio([3e-3] * 5, 200, 40 * 200) == 1.0


def test_lr_mass_ratio_never_lengthens_a_jump_while_the_rate_rises():
    assert lr_mass_ratio([0.2, 0.4, 0.6, 0.8, 1.0], 200, 8000) == 1.0


def test_lr_mass_ratio_of_a_linear_decay_is_exact():
    # lr(s) = 1 - s / 10_000 sampled every 200 steps; the window's mean rate is its midpoint's, and the trend
    # continues exactly: the coming 1000 steps have mean rate lr at their midpoint.
    lr = lambda s: 1 - s / 10_000
    lrs = [lr(s) for s in (4200, 4400, 4600, 4800, 5000)]
    assert lr_mass_ratio(lrs, 200, 1000) == pytest.approx(lr(5500) / lr(4600))


def test_lr_mass_ratio_stops_the_trend_at_zero():
    # Decaying by 0.1 per 200 steps from 0.5: zero 1000 steps after the newest capture; over a 4000-step
    # horizon the mean rate is 0.5 * 0.5 * 1000 / 4000, against a context mean of 0.7.
    lrs = [0.9, 0.8, 0.7, 0.6, 0.5]
    assert lr_mass_ratio(lrs, 200, 4000) == pytest.approx(0.0625 / 0.7)


def test_lr_mass_ratio_follows_a_cosine_decay():
    steps = 10_000
    cosine = lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))

    def both(t, ahead):
        lrs = [cosine(t - 800 + 200 * j) for j in range(5)]
        future = sum(cosine(s) for s in range(t, t + ahead)) / ahead
        window = sum(cosine(s) for s in range(t - 800, t)) / 800
        return lr_mass_ratio(lrs, 200, ahead), future / window

    estimate, truth = both(5000, 3200)  # mid-decay, where the trend is nearly straight
    assert estimate == pytest.approx(truth, rel=0.1)
    estimate, truth = both(8000, 1000)  # the flattening tail: a straight trend undershoots (a shorter jump)
    assert 0.6 * truth < estimate < truth


def test_lr_mass_ratio_of_a_zero_rate_is_zero_and_of_an_empty_window_one():
    assert lr_mass_ratio([0.3, 0.2, 0.1, 0.0, 0.0], 200, 200) == 0.0
    assert lr_mass_ratio([0.0] * 5, 200, 200) == 1.0  # nothing moved: nothing to scale
    assert lr_mass_ratio([], 200, 200) == 1.0


def test_scaled_horizon_rounds_up_and_takes_part_of_the_jump():
    assert scaled_horizon(16, [1.0] * 5, 200) == (16, 1.0)  # constant rate: the k-decay's horizon, all of it
    lrs = [0.9, 0.8, 0.7, 0.6, 0.5]  # reaches zero 1000 steps after the newest capture
    k_asked, fraction = scaled_horizon(20, lrs, 200)
    scaled = 20 * lr_mass_ratio(lrs, 200, 20 * 200)
    assert k_asked == math.ceil(scaled) and fraction == pytest.approx(scaled / k_asked) and 0 < fraction <= 1
    assert scaled_horizon(3, [0.3, 0.2, 0.1, 0.0, 0.0], 200) == (1, 0.0)  # no rate left: no jump

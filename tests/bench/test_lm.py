"""The LM task on tiny settings: model, perplexity, steps to a perplexity, same seed = same run, NiNoAdam."""
import math

import pytest
import torch

from conftest import kjv, needs_kjv
from nino_optim import NiNoAdam
from nino_optim.bench.lm import LMTask, TinyGPT, perplexity, train_lm_steps_to_target, windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tiny_gpt_is_causal_and_ties_its_output_layer():
    model = TinyGPT(LMTask(layers=1)).eval()
    assert model.lm_head.weight is model.wte.weight
    x = torch.randint(0, 256, (2, 16))
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert a.shape == (2, 16, 256)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6) and not torch.allclose(a[:, 10:], b[:, 10:])


def test_windows_and_perplexity_of_a_uniform_model():
    data = torch.arange(100, dtype=torch.uint8)
    x, y = windows(data, torch.tensor([0, 50]), 8)
    assert x.tolist()[1] == list(range(50, 58)) and y.tolist()[1] == list(range(51, 59))
    model = TinyGPT(LMTask(layers=1))
    torch.nn.init.zeros_(model.wte.weight)  # zero logits everywhere: perplexity = vocabulary size
    assert math.isclose(perplexity(model, x, y), 256.0, rel_tol=1e-5)


@needs_kjv
def test_training_lowers_perplexity_and_same_seed_repeats_exactly():
    def adamw(model):
        return torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)

    runs = [train_lm_steps_to_target(adamw, kjv(), steps=40, eval_every=20, thresholds=[100.0, 1.5], seed=s,
                                     eval_windows=64) for s in (1, 1, 2)]
    a, b, c = runs
    assert a.steps == [0, 20, 40] and not a.higher_is_better
    assert a.values[0] > 200 and a.values[-1] < 30  # from ~uniform over bytes to something learnt
    assert a.reached == {1.5: None, 100.0: 20}  # perplexity at or below 100 at the first evaluation after step 0
    assert a.values == b.values and a.train_loss[1:] == b.train_loss[1:]
    assert a.values != c.values


@needs_kjv
def test_nino_adam_nowcasts_the_tiny_gpt():
    def nino(model):
        return NiNoAdam(model.parameters(), model=model, base=torch.optim.AdamW, lr=3e-3, weight_decay=0.01,
                        nowcaster="linefit+", period=10, context=5, max_steps=30)

    curve = train_lm_steps_to_target(nino, kjv(), steps=30, eval_every=10, seed=1, eval_windows=64)
    assert curve.nowcast_steps == [10, 20] and curve.finite  # the last step (30 = max_steps) is AdamW's
    assert all(math.isfinite(v) for v in curve.values)


def test_the_tiny_gpt_graph_is_traced_whole():
    import warnings

    from nino_optim import build_neural_graph

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        graph = build_neural_graph(TinyGPT())
    assert bool(graph.placed_mask.all()) and not graph.fallback
    assert graph.num_params == sum(p.numel() for p in TinyGPT().parameters())  # the tied output layer once

"""A nowcaster wrapper that records each nowcast, so tests can check that one happened and what it wrote."""
from __future__ import annotations

import torch


class RecordedNowcasts:
    """Replaces ``opt.nowcaster`` with a pass-through that keeps, for each nowcast, the optimizer call it ran on,
    the horizon ``k``, the states it was given and the prediction it returned."""

    def __init__(self, opt):
        self.inner, self.opt, self.calls = opt.nowcaster, opt, []
        opt.nowcaster = self

    def predict(self, graph, states, k):
        pred = self.inner.predict(graph, states, k)
        self.calls.append({"call": self.opt.steps_done + 1, "k": k, "states": states.detach().clone(),
                           "pred": pred.detach().clone()})
        return pred

    def __getattr__(self, name):  # max_horizon and whatever else the optimizer reads
        return getattr(self.__dict__["inner"], name)


def params_in_graph_order(opt, model) -> torch.Tensor:
    """The model's parameters flattened in the order of ``opt.graph`` (the order of a prediction)."""
    named = dict(model.named_parameters())
    return torch.cat([named[info.name].detach().reshape(-1) for info in opt.graph.params])


def train_across_nowcast(opt, model, loss_fn, steps: int, nowcast_call: int):
    """``steps`` optimizer calls of ``loss_fn()``; checks that exactly one nowcast ran, on call ``nowcast_call``,
    from the parameters of the call before, and that it wrote its prediction, which moved the parameters.
    Returns the losses of the calls that computed one."""
    record = RecordedNowcasts(opt)
    losses = []
    for call in range(1, steps + 1):
        opt.zero_grad()
        if call == nowcast_call:
            before = params_in_graph_order(opt, model).clone()
        if opt.need_grads:
            loss = loss_fn()
            loss.backward()
            losses.append(loss.item())
        else:
            assert call == nowcast_call, f"call {call} skipped its gradients but is not the nowcast"
        opt.step()
        if call == nowcast_call:
            assert [c["call"] for c in record.calls] == [nowcast_call], "exactly one nowcast, on its call"
            states, pred = record.calls[0]["states"], record.calls[0]["pred"]
            assert torch.equal(states[:, -1].to(before), before)  # the newest captured state: these parameters
            assert not torch.allclose(pred.to(before), before)  # the jump goes somewhere
            assert torch.equal(params_in_graph_order(opt, model), pred.to(before))  # and is what was written
    assert len(record.calls) == 1
    return losses

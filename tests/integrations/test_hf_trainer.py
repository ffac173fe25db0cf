"""Hugging Face ``Trainer`` with ``optimizers=(NiNoAdam, scheduler)`` (examples/hf_trainer.py at a tiny size):
the nowcast happens at the right optimizer step under gradient accumulation, Trainer's checkpoint
(``optimizer.pt``) carries the ``"nino"`` state, and resuming from it continues the nowcast timeline exactly."""
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="transformers not installed (pip install transformers accelerate)")
pytest.importorskip("accelerate", reason="Trainer needs accelerate (pip install accelerate)")

EXAMPLE = Path(__file__).parents[2] / "examples" / "hf_trainer.py"
_spec = importlib.util.spec_from_file_location("hf_trainer_example", EXAMPLE)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

PERIOD, CONTEXT, STEPS, SAVE, ACCUM, BLOCK = 10, 5, 14, 6, 2, 16
TEXT = example.english_text()[:40_000]


class Recorder:
    """Predicts ``newest state + 1e-3`` and records the optimizer step it ran on and the states it got."""

    def __init__(self):
        self.opt, self.calls = None, []

    def predict(self, graph, states, k):
        self.calls.append({"step": self.opt.steps_done + 1, "states": states.clone(), "k": k})
        return states[:, -1].float() + 1e-3


def run(out_dir, resume=None):
    train_set, eval_set = example.make_datasets(BLOCK, TEXT)
    model = example.make_model(BLOCK, n_layer=1, n_embd=16, n_head=2)
    rec = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt, sched = example.make_optimizer(model, steps=STEPS, lr=3e-3, period=PERIOD, context=CONTEXT,
                                            nowcaster=rec)
        rec.opt = opt
        trainer = example.make_trainer(model, (opt, sched), train_set, eval_set, out_dir, steps=STEPS, batch=4,
                                       accum=ACCUM, save_steps=SAVE)
        trainer.train(resume_from_checkpoint=resume)
    return trainer, model, opt, rec


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    return out, run(out)


def test_trainer_nowcasts_at_the_right_step(straight):
    out, (trainer, model, opt, rec) = straight
    assert trainer.state.global_step == STEPS == opt.steps_done  # micro-batches are not counted
    assert [c["step"] for c in rec.calls] == [PERIOD]
    states = rec.calls[0]["states"]
    assert len({tuple(states[:, i].tolist()) for i in range(CONTEXT)}) == CONTEXT  # five different states


def test_trainer_checkpoint_carries_nino_state(straight):
    out, (trainer, model, opt, rec) = straight
    nino = torch.load(out / f"checkpoint-{SAVE}" / "optimizer.pt", weights_only=True)["nino"]
    assert nino["steps_done"] == SAVE and nino["period"] == PERIOD
    assert nino["history"].shape == (SAVE // (PERIOD // CONTEXT), opt.graph.num_params)
    # the states captured before the checkpoint are the ones the nowcast at step 10 used
    assert torch.equal(nino["history"].t(), rec.calls[0]["states"][:, : nino["history"].shape[0]])


def test_trainer_resume_continues_the_timeline(straight, tmp_path):
    out, (_, model_a, opt_a, rec_a) = straight
    trainer, model, opt, rec = run(tmp_path, resume=str(out / f"checkpoint-{SAVE}"))
    assert opt.steps_done == STEPS == trainer.state.global_step
    assert [c["step"] for c in rec.calls] == [PERIOD]  # not at resume-relative step 10 (= 16)
    assert torch.equal(rec.calls[0]["states"], rec_a.calls[0]["states"])
    for a, b in zip(model_a.parameters(), model.parameters()):  # the resumed run equals the straight run
        assert torch.equal(a, b)

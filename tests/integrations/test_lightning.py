"""Lightning with ``configure_optimizers`` returning NiNoAdam (examples/lightning_example.py at a tiny size):
with ``accumulate_grad_batches`` only optimizer steps count and the nowcast comes at the right one; Lightning's
checkpoint carries the ``"nino"`` state; resuming from it continues the timeline.

The resumed run is not compared bitwise with the straight one: Lightning itself does not replay the data exactly
after resuming from an end-of-epoch checkpoint (it runs one extra batch of the unfinished epoch 0 and then
steps once on that single micro-batch), so the parameters differ for reasons that have nothing to do with
NiNoAdam. (``tests/integrations/test_hf_trainer.py`` does check bitwise equality for HF Trainer.)"""
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning", reason="lightning not installed (pip install lightning)")
pytest.importorskip("sklearn", reason="the example's data needs scikit-learn")

from torch.utils.data import DataLoader, Subset  # noqa: E402

EXAMPLE = Path(__file__).parents[2] / "examples" / "lightning_example.py"
_spec = importlib.util.spec_from_file_location("lightning_example", EXAMPLE)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

PERIOD, CONTEXT, ACCUM, BATCH, EPOCH_STEPS, STEPS = 10, 5, 2, 16, 6, 14


class Recorder:
    def __init__(self):
        self.opt, self.calls = None, []

    def predict(self, graph, states, k):
        self.calls.append({"step": self.opt.steps_done + 1, "states": states.clone()})
        return states[:, -1].float() + 1e-3


def run(out_dir, resume=None):
    import lightning as L

    L.seed_everything(0, verbose=False)
    train_set, _ = example.digits()
    train = DataLoader(Subset(train_set, range(EPOCH_STEPS * ACCUM * BATCH)), batch_size=BATCH, shuffle=False)
    rec = Recorder()
    model = example.DigitsMLP(STEPS, lr=1e-2, period=PERIOD, context=CONTEXT, hidden=16, nowcaster=rec)
    trainer = example.make_trainer(out_dir, STEPS, ACCUM, enable_progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        orig = model.configure_optimizers

        def configure():  # keep a handle on the optimizer Lightning gets
            rec.opt = orig()
            return rec.opt

        model.configure_optimizers = configure
        trainer.fit(model, train, ckpt_path=resume)
    return trainer, model, rec


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("lightning")
    return out, run(out)


def test_lightning_accumulation_counts_optimizer_steps(straight):
    out, (trainer, model, rec) = straight
    assert trainer.global_step == STEPS == rec.opt.steps_done
    assert [c["step"] for c in rec.calls] == [PERIOD]
    states = rec.calls[0]["states"]
    assert len({tuple(states[:, i].tolist()) for i in range(CONTEXT)}) == CONTEXT  # five different states


def test_lightning_checkpoint_carries_nino_state(straight):
    out, (trainer, model, rec) = straight
    ckpt = torch.load(out / f"epoch=0-step={EPOCH_STEPS}.ckpt", weights_only=False)
    nino = ckpt["optimizer_states"][0]["nino"]
    assert nino["steps_done"] == EPOCH_STEPS
    assert torch.equal(nino["history"].t(), rec.calls[0]["states"][:, : nino["history"].shape[0]])


def test_lightning_resume_continues_the_timeline(straight, tmp_path):
    out, (_, model_a, rec_a) = straight
    trainer, model, rec = run(tmp_path, resume=str(out / f"epoch=0-step={EPOCH_STEPS}.ckpt"))
    assert trainer.global_step == STEPS == rec.opt.steps_done
    assert [c["step"] for c in rec.calls] == [PERIOD]
    ckpt = torch.load(out / f"epoch=0-step={EPOCH_STEPS}.ckpt", weights_only=False)
    saved = ckpt["optimizer_states"][0]["nino"]["history"].t()  # 3 states captured before the checkpoint
    assert torch.equal(rec.calls[0]["states"][:, : saved.shape[1]], saved)  # carried over into the nowcast
    assert torch.equal(rec.calls[0]["states"][:, : saved.shape[1]], rec_a.calls[0]["states"][:, : saved.shape[1]])
    states = rec.calls[0]["states"]
    assert len({tuple(states[:, i].tolist()) for i in range(CONTEXT)}) == CONTEXT

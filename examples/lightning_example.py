"""Lightning with NiNoAdam: ``configure_optimizers`` returns it, ``accumulate_grad_batches`` just works.

An MLP on scikit-learn's handwritten digits (1,797 real 8x8 images, bundled with scikit-learn, no download).
Lightning calls ``optimizer.step(closure)`` once per ``accumulate_grad_batches`` micro-batches, and NiNoAdam
counts those optimizer steps only (``trainer.global_step == opt.steps_done``). Lightning's checkpoints hold
``optimizer.state_dict()``, which includes NiNo's step counter and captured states, so ``--resume`` continues
the nowcast timeline.

    pip install lightning scikit-learn
    python examples/lightning_example.py                    # 1500 steps, nowcast every 250, ~30 s on a CPU
    python examples/lightning_example.py --adam             # plain Adam, to compare
    python examples/lightning_example.py --steps 2000 --resume runs/lightning/last.ckpt
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning as L

from nino_optim import NiNoAdam


def digits(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's digits, scaled to [0, 1], split 1,500 / 297."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return TensorDataset(x[:1500], y[:1500]), TensorDataset(x[1500:], y[1500:])


class DigitsMLP(L.LightningModule):
    def __init__(self, steps: int, lr: float = 1e-3, period: int = 250, context: int = 5, hidden: int = 64,
                 adam: bool = False, nowcaster="default"):
        super().__init__()
        self.save_hyperparameters(ignore=["nowcaster"])
        self.nowcaster = nowcaster
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        h = self.hparams
        if h.adam:
            return torch.optim.Adam(self.parameters(), lr=h.lr)
        # model=self.net: the graph comes from the network; every parameter of self is in it
        return NiNoAdam(self.parameters(), model=self.net, lr=h.lr, nowcaster=self.nowcaster, period=h.period,
                        context=h.context, max_steps=h.steps)


def make_trainer(out_dir, steps: int, accum: int = 1, **extra) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=str(out_dir), save_last=True, save_top_k=-1, every_n_epochs=1,
                           filename="{epoch}-{step}")
    return L.Trainer(max_steps=steps, accumulate_grad_batches=accum, accelerator="cpu", devices=1,
                     callbacks=[ckpt], logger=False, enable_model_summary=False, **extra)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps (Trainer's max_steps)")
    ap.add_argument("--period", type=int, default=250)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--accum", type=int, default=2, help="accumulate_grad_batches")
    ap.add_argument("--output-dir", type=Path, default=Path("runs/lightning"))
    ap.add_argument("--resume", help="a checkpoint (.ckpt) of an earlier run")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (a model this small runs fastest on one; more thrash on a busy CPU)")
    ap.add_argument("--adam", action="store_true", help="plain Adam instead of NiNoAdam")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    L.seed_everything(0)
    train_set, val_set = digits()
    train = DataLoader(train_set, batch_size=args.batch, shuffle=True)
    val = DataLoader(val_set, batch_size=512)
    model = DigitsMLP(args.steps, lr=args.lr, period=args.period, adam=args.adam)
    trainer = make_trainer(args.output_dir, args.steps, args.accum, check_val_every_n_epoch=5,
                           enable_progress_bar=False)
    start = time.time()
    trainer.fit(model, train, val, ckpt_path=args.resume)
    metrics = trainer.validate(model, val, verbose=False)[0]
    print(f"{'Adam' if args.adam else 'NiNoAdam'}: val loss {metrics['val_loss']:.4f}, val acc "
          f"{metrics['val_acc']:.4f} after {trainer.global_step} steps, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()

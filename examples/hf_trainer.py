"""Hugging Face ``Trainer`` with NiNoAdam: a small GPT-2 built from a config, trained on real English text.

Nothing is downloaded: the model is ``GPT2LMHeadModel(GPT2Config(...))`` with randomly initialised weights and a
byte-level vocabulary (token id = UTF-8 byte, 256 ids, no tokenizer), and the default text is the English
reference documentation that ships with every CPython (``pydoc_data.topics``, ~460 kB); ``--text FILE`` uses
your own. NiNoAdam goes in through ``optimizers=(optimizer, scheduler)``; Trainer's checkpoints then carry
NiNo's step counter and captured states in ``optimizer.pt`` (the ``"nino"`` entry), so
``--resume <checkpoint dir>`` continues the nowcast timeline exactly where it stopped.

    pip install -e ".[test]"                      # or: pip install transformers accelerate
    python examples/hf_trainer.py                 # 2000 steps, nowcast every 200, ~2-4 min on a 2-core CPU
    python examples/hf_trainer.py --adam          # the same run with plain AdamW, to compare eval losses
    python examples/hf_trainer.py --resume runs/hf_trainer/checkpoint-1000   # continue an interrupted run

Gradient accumulation (``--accum``) is handled by Trainer: NiNoAdam counts optimizer steps, not micro-batches.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from nino_optim import NiNoAdam


def english_text() -> str:
    """Real English prose that is always available offline: CPython's pydoc topic pages."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


class ByteChunks(Dataset):
    """Consecutive ``block``-byte chunks of ``text`` as GPT-2 inputs (labels = inputs; the model shifts them)."""

    def __init__(self, text: str, block: int):
        data = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()
        self.chunks = data[: len(data) // block * block].view(-1, block)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.chunks[i], "labels": self.chunks[i]}


def make_model(block: int = 64, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=256, n_positions=block, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def make_datasets(block: int, text: str | None = None, eval_bytes: int = 16_384) -> tuple[ByteChunks, ByteChunks]:
    """The text's last ``eval_bytes`` bytes (at most 10%) for evaluation, the rest for training."""
    text = english_text() if text is None else text
    split = len(text) - min(eval_bytes, len(text) // 10)
    return ByteChunks(text[:split], block), ByteChunks(text[split:], block)


def make_trainer(model, optimizers, train_set, eval_set, output_dir, *, steps: int, batch: int = 16,
                 accum: int = 1, save_steps: int = 200, eval_steps: int | None = None, seed: int = 0, **extra):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch, gradient_accumulation_steps=accum, save_strategy="steps",
        save_steps=save_steps, eval_strategy="steps" if eval_steps else "no", eval_steps=eval_steps,
        logging_steps=max(1, min(50, steps // 10)), report_to=[], use_cpu=True, seed=seed, data_seed=seed,
        dataloader_num_workers=0, disable_tqdm=True, **extra)
    return Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set, optimizers=optimizers)


def make_optimizer(model, *, steps: int, lr: float, period: int, context: int = 5, adam: bool = False,
                   nowcaster="default", warmup: int = 0):
    from transformers import get_linear_schedule_with_warmup

    if adam:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    else:
        opt = NiNoAdam(model.parameters(), model, lr=lr, base=torch.optim.AdamW, weight_decay=0.0,
                       nowcaster=nowcaster, period=period, context=context, max_steps=steps)
    return opt, get_linear_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=steps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="optimizer steps (Trainer's max_steps)")
    ap.add_argument("--period", type=int, default=200, help="NiNoAdam: one nowcast every PERIOD steps")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--accum", type=int, default=1, help="gradient accumulation steps")
    ap.add_argument("--block", type=int, default=64, help="context length in bytes")
    ap.add_argument("--save-steps", type=int, default=500)
    ap.add_argument("--text", type=Path, help="train on this UTF-8 text file instead of the pydoc topics")
    ap.add_argument("--output-dir", type=Path, default=Path("runs/hf_trainer"))
    ap.add_argument("--resume", help="a checkpoint directory of an earlier run (or 'last')")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (a model this small runs fastest on one; more thrash on a busy CPU)")
    ap.add_argument("--adam", action="store_true", help="plain AdamW instead of NiNoAdam")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    train_set, eval_set = make_datasets(args.block, args.text.read_text() if args.text else None)
    model = make_model(args.block)
    opt, sched = make_optimizer(model, steps=args.steps, lr=args.lr, period=args.period, adam=args.adam,
                                warmup=args.steps // 20)
    trainer = make_trainer(model, (opt, sched), train_set, eval_set, args.output_dir, steps=args.steps,
                           batch=args.batch, accum=args.accum, save_steps=args.save_steps,
                           eval_steps=max(1, args.steps // 8))
    start = time.time()
    resume = True if args.resume == "last" else args.resume
    trainer.train(resume_from_checkpoint=resume)
    loss = trainer.evaluate()["eval_loss"]
    print(f"{'AdamW' if args.adam else 'NiNoAdam'}: eval loss {loss:.4f} ({loss / math.log(2):.3f} bits/byte) "
          f"after {trainer.state.global_step} steps, {time.time() - start:.0f} s")
    if not args.adam:
        print(f"NiNoAdam steps done: {opt.steps_done}; last checkpoint's optimizer.pt has a 'nino' entry")


if __name__ == "__main__":
    main()

"""The benchmark's language-model task: a small GPT on King James Bible bytes, trained with AdamW.

``TinyGPT`` is a pre-LayerNorm GPT (token and position embeddings, fused q/k/v, causal
``scaled_dot_product_attention``, GELU MLP, output layer tied to the token embedding), 2 layers, 64 wide,
4 heads, context 64, vocabulary 256 (bytes): 0.11M parameters, sized so that a 10,000-step run with
evaluation takes a few minutes on one core. Batches are 32 random windows of the training bytes drawn from a
generator seeded with the run seed (same batches for every method); validation perplexity is exp of the mean
next-byte cross-entropy on a fixed set of validation windows.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer

from .steps_to_target import Curve, run_steps
from .text import TextData


@dataclass(frozen=True)
class LMTask:
    """Model size, AdamW settings and the target validation perplexity (lower is better)."""

    name: str = "LM-KJV"
    vocab: int = 256
    context: int = 64
    width: int = 64
    layers: int = 2
    heads: int = 4
    batch_size: int = 32
    # Tuned on seed 1000, 10,000 steps, lr in {1e-3, 3e-3, 1e-2}: final validation perplexity 3.364 / 3.368 /
    # 4.109; 3e-3 gets there faster. The target is a little above the tuned run's best (3.364), reached at step
    # 8,400 of 10,000, as the paper's targets sit at what tuned Adam reaches late in the run; the ladder's 3.8 and
    # 3.6 were reached at steps 3,000 and 4,800.
    lr: float = 3e-3
    weight_decay: float = 0.01
    target: float = 3.4
    ladder: tuple[float, ...] = (3.8, 3.6)

    @property
    def model(self) -> str:
        """The model's description, part of the benchmark protocol."""
        return (f"TinyGPT(vocab={self.vocab}, context={self.context}, width={self.width}, layers={self.layers}, "
                f"heads={self.heads})")


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, width] -> [B, T, width]."""
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln_2(x))))


class TinyGPT(nn.Module):
    """Byte-level GPT: tokens [B, T] -> logits [B, T, vocab]."""

    def __init__(self, task: LMTask = LMTask()):
        super().__init__()
        self.wte = nn.Embedding(task.vocab, task.width)
        self.wpe = nn.Embedding(task.context, task.width)
        self.h = nn.ModuleList(Block(task.width, task.heads) for _ in range(task.layers))
        self.ln_f = nn.LayerNorm(task.width)
        self.lm_head = nn.Linear(task.width, task.vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for m in self.modules():  # GPT-2's initialisation
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def windows(data: torch.Tensor, starts: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) [len(starts), length] int64 on ``data``'s device: bytes at start.. and one further."""
    idx = (starts[:, None] + torch.arange(length + 1, device=starts.device)).to(data.device, non_blocking=True)
    chunk = data[idx].long()
    return chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def perplexity(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 256) -> float:
    """exp(mean cross-entropy) of ``model`` on [N, T] windows, in eval mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(inputs), batch_size):
        logits = model(inputs[i: i + batch_size])
        total += float(F.cross_entropy(logits.flatten(0, 1), targets[i: i + batch_size].flatten(), reduction="sum"))
        count += targets[i: i + batch_size].numel()
    model.train(was_training)
    return math.exp(total / max(1, count))


def validation_windows(text: TextData, task: LMTask, count: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of ``count`` evenly spaced validation windows."""
    starts = torch.linspace(0, len(text.val) - task.context - 2, count).long()
    return windows(text.val, starts, task.context)


def train_lm_steps_to_target(make_optimizer: Callable[[nn.Module], Optimizer], text: TextData, *, steps: int,
                             eval_every: int, thresholds: Iterable[float] = (), seed: int = 0,
                             task: LMTask = LMTask(), name: str = "run", eval_windows: int = 512,
                             on_eval: Callable[[int, float], None] | None = None,
                             device: torch.device | str = "cpu") -> Curve:
    """Train a fresh ``TinyGPT`` for ``steps`` optimizer steps; record validation perplexity every ``eval_every``.

    ``thresholds`` are perplexities; ``reached[t]`` is the first evaluated step with perplexity <= t. On a
    NiNoAdam nowcast call (``need_grads`` False) the batch is drawn but forward/backward are skipped. Seeds the
    initialisation (``torch.manual_seed(seed)``) and the batch order (its own generator, on the CPU); the model
    and the text live on ``device``.
    """
    if steps <= 0 or eval_every <= 0:
        raise ValueError(f"steps and eval_every must be positive, got {steps} and {eval_every}")
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = TinyGPT(task).to(device)
    optimizer = make_optimizer(model)
    text = TextData(text.name, text.train.to(device), text.val.to(device))
    generator = torch.Generator().manual_seed(seed)
    val_x, val_y = validation_windows(text, task, eval_windows)
    curve = Curve(name=name, reached={float(t): None for t in sorted(thresholds)}, higher_is_better=False)
    high = len(text.train) - task.context - 1

    def record(step: int, loss: float) -> None:
        t0 = time.perf_counter()
        value = perplexity(model, val_x, val_y)
        curve.eval_time += time.perf_counter() - t0
        curve.add(step, value, loss)
        if on_eval is not None:
            on_eval(step, value)

    def next_batch():
        x, y = windows(text.train, torch.randint(0, high, (task.batch_size,), generator=generator), task.context)
        return lambda: F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    record(0, float("nan"))
    run_steps(optimizer, steps, eval_every, curve, next_batch, record)
    curve.wall_time = time.perf_counter() - start
    return curve


LM_TASK = LMTask()

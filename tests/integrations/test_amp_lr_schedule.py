"""examples/amp_lr_schedule.py at a tiny size: bfloat16 autocast on the CPU, an LR scheduler drives NiNoAdam's
base lr (``opt.param_groups``), the GradScaler path leaves the nowcast step alone, and the nowcast happens at
the right optimizer step."""
import importlib.util
from pathlib import Path

import pytest
import torch

from conftest import fashion_mnist, needs_fashion_mnist

needs_data = needs_fashion_mnist

EXAMPLE = Path(__file__).parents[2] / "examples" / "amp_lr_schedule.py"
_spec = importlib.util.spec_from_file_location("amp_lr_schedule_example", EXAMPLE)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

LR, WARMUP, STEPS = 6e-3, 4, 12
TINY = ["--device", "cpu", "--steps", str(STEPS), "--period", "10", "--lr", str(LR), "--warmup", str(WARMUP),
        "--batch", "32", "--train-size", "512", "--test-size", "200", "--log-every", "4"]


@pytest.fixture(autouse=True)
def cached_data_and_threads(monkeypatch):
    monkeypatch.setattr(example, "load_fashion_mnist", fashion_mnist)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@needs_data
def test_bf16_autocast_warmup_cosine_with_grad_scaler():
    result = example.main([*TINY, "--schedule", "cosine", "--grad-scaler", "on"])
    assert result["logits_dtype"] == torch.bfloat16  # autocast was in effect
    assert result["grad_scaler"] and result["overflow_skips"] == 0
    assert result["steps_done"] == STEPS and len(result["lrs"]) == STEPS
    assert [n["step"] for n in result["nowcasts"]] == [10]
    lrs = result["lrs"]  # opt.param_groups[0]["lr"] as each step used it
    assert lrs[:WARMUP] == pytest.approx([LR * (s + 1) / WARMUP for s in range(WARMUP)])
    assert all(a > b for a, b in zip(lrs[WARMUP:], lrs[WARMUP + 1:]))  # cosine decay
    assert result["nowcasts"][0]["lr"] == lrs[9]
    assert result["final_group_lr"] == result["scheduler_last_lr"] < lrs[-1]


@needs_data
def test_onecycle_default_precision():
    result = example.main([*TINY, "--schedule", "onecycle"])
    assert result["logits_dtype"] == torch.bfloat16
    assert not result["grad_scaler"]  # bfloat16: no loss scaling by default
    assert [n["step"] for n in result["nowcasts"]] == [10]
    lrs = result["lrs"]
    assert len(set(lrs)) == STEPS  # the scheduler changed the lr on every step
    assert max(lrs) == pytest.approx(LR, rel=1e-6) and lrs[0] < LR / 10 and lrs[-1] < LR / 10
    assert result["final_group_lr"] == result["scheduler_last_lr"]


def test_cpu_float16_is_refused():
    with pytest.raises(SystemExit):
        example.main(["--device", "cpu", "--dtype", "float16"])

"""examples/plain_loop.py at a tiny size: FM-16 on real Fashion-MNIST in a plain loop, the nowcast step skips
forward/backward (``opt.need_grads``), and before the first nowcast NiNoAdam is exactly Adam."""
import importlib.util
from pathlib import Path

import pytest
import torch

from conftest import fashion_mnist, needs_fashion_mnist

pytestmark = needs_fashion_mnist

EXAMPLE = Path(__file__).parents[2] / "examples" / "plain_loop.py"
_spec = importlib.util.spec_from_file_location("plain_loop_example", EXAMPLE)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

TINY = ["--period", "10", "--batch", "32", "--train-size", "512", "--test-size", "200", "--log-every", "5"]


@pytest.fixture(autouse=True)
def cached_data_and_threads(monkeypatch):
    """Load Fashion-MNIST once for all runs of this module; restore torch's thread count afterwards."""
    monkeypatch.setattr(example, "load_fashion_mnist", fashion_mnist)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_plain_loop_nowcast_skips_forward_backward():
    result = example.main(["--steps", "12", *TINY])
    assert result["steps_done"] == 12
    assert [n["step"] for n in result["nowcasts"]] == [10]
    assert result["forward_steps"] == 11  # step 10 was the nowcast: no forward/backward there
    n = result["nowcasts"][0]
    assert n["loss_before"] != n["loss_after"]  # the nowcast moved the parameters
    assert all(torch.isfinite(torch.tensor([n["loss_after"], result["test_loss"]])))


def test_plain_loop_is_adam_before_the_first_nowcast():
    """Same seed, same batches: up to step 9 NiNoAdam only captures states and takes Adam's steps."""
    nino = example.main(["--steps", "9", *TINY])
    adam = example.main(["--steps", "9", "--adam", *TINY])
    assert nino["nowcasts"] == [] and nino["forward_steps"] == adam["forward_steps"] == 9
    assert nino["test_loss"] == adam["test_loss"] and nino["test_acc"] == adam["test_acc"]

"""examples/checkpoint_resume.py at a tiny size: a run stopped at step 6 and resumed with ``--resume`` in a
fresh process nowcasts at step 10 like the straight run and ends with bitwise-identical parameters and Adam
state (nowcast every 10 steps, 14 steps in all: the break falls between captures 3 and 4 of the first cycle)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

from conftest import needs_fashion_mnist
from nino_optim.bench import data as fm_data

needs_data = needs_fashion_mnist

EXAMPLE = Path(__file__).parents[2] / "examples" / "checkpoint_resume.py"
_spec = importlib.util.spec_from_file_location("checkpoint_resume_example", EXAMPLE)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

STEPS, BREAK, PERIOD = 14, 6, 10
TINY = ["--steps", str(STEPS), "--period", str(PERIOD), "--warmup", "3", "--batch", "32", "--train-size", "256",
        "--test-size", "100", "--save-every", "0", "--log-every", "5", "--threads", "1"]


def test_batch_order_depends_on_the_step_only():
    a = [example.batch_indices(s, 100, 32, 0) for s in (1, 2, 3, 4, 5, 7)]
    b = [example.batch_indices(s, 100, 32, 0) for s in (7, 5, 4, 3, 2, 1)][::-1]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len(torch.cat(a[:3]).unique()) == 96  # one epoch: no example twice
    assert not torch.equal(a[0], a[3])  # epoch 2 is a new permutation


@needs_data
def test_resume_in_a_fresh_process_is_bitwise_identical(tmp_path, monkeypatch):
    data = fm_data.load_fashion_mnist()  # loaded once for both in-process runs
    monkeypatch.setattr(example, "load_fashion_mnist", lambda: data)
    threads = torch.get_num_threads()
    try:
        straight = example.main([*TINY, "--ckpt", str(tmp_path / "straight.pt")])
        first = example.main([*TINY, "--ckpt", str(tmp_path / "resumed.pt"), "--stop-at", str(BREAK)])
    finally:
        torch.set_num_threads(threads)
    assert straight["nowcasts"] == [PERIOD] and first["nowcasts"] == [] and first["steps_done"] == BREAK
    mid = torch.load(tmp_path / "resumed.pt", weights_only=True)
    nino = mid["optimizer"]["nino"]
    assert mid["step"] == nino["steps_done"] == BREAK
    assert nino["history"].shape[0] == 3  # captured before steps 2, 4, 6 of the cycle that nowcasts at 10

    proc = subprocess.run([sys.executable, str(EXAMPLE), "--resume", "--ckpt", str(tmp_path / "resumed.pt"),
                           "--test-size", "100", "--log-every", "5"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"resumed from {tmp_path / 'resumed.pt'} at step {BREAK}" in proc.stdout
    assert f"parameters sha256 {straight['sha256']}" in proc.stdout

    a = torch.load(tmp_path / "straight.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert b["step"] == STEPS and b["nowcasts"] == [PERIOD]  # the resumed process did the nowcast at step 10
    for name, value in a["model"].items():
        assert torch.equal(b["model"][name], value), name
    assert not torch.equal(b["model"]["fc.8.weight"], mid["model"]["fc.8.weight"])  # it did train past the break
    sa, sb = a["optimizer"], b["optimizer"]
    for key, state in sa["state"].items():
        for k, v in state.items():
            assert torch.equal(sb["state"][key][k], v), (key, k)
    assert sb["param_groups"][0]["lr"] == sa["param_groups"][0]["lr"]
    assert sb["nino"]["steps_done"] == sa["nino"]["steps_done"] == STEPS
    assert torch.equal(sb["nino"]["history"], sa["nino"]["history"])
    assert b["scheduler"]["last_epoch"] == a["scheduler"]["last_epoch"] == STEPS

"""DDP and FSDP2 with 2 processes on gloo: after a nowcast every rank holds bitwise-identical parameters (rank 0
predicts and broadcasts; under FSDP2 the shards are gathered for the capture and each rank writes back its own
shard), a rejected prediction on rank 0 is skipped by all ranks together, and nothing deadlocks.

The ranks are plain subprocesses (as torchrun starts them) with a wall-clock timeout, so a deadlock fails the
test instead of hanging it. The scenarios live in ``_ddp_worker.py``.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

WORKER = Path(__file__).with_name("_ddp_worker.py")
WORLD, TIMEOUT_S = 2, 120

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args):
    """Run ``python *args`` as WORLD ranks with the environment torchrun would give them; their outputs."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(WORLD),
           "LOCAL_WORLD_SIZE": str(WORLD), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    procs = [subprocess.Popen([sys.executable, *map(str, args)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(WORLD)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"DDP ranks did not finish within {TIMEOUT_S} s (deadlock?)")
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-4000:]}"
    return logs


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    launch([WORKER, out])
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def assert_identical(results, name):
    r0 = results[0][name]
    for other in results[1:]:
        o = other[name]
        for step in r0["after"]:
            assert torch.equal(r0["before"][step], o["before"][step]), f"{name}: ranks differ before step {step}"
            assert torch.equal(r0["after"][step], o["after"][step]), f"{name}: ranks differ after nowcast {step}"
        assert torch.equal(r0["final"], o["final"])


def test_ranks_that_disagree_end_identical(results):
    assert_identical(results, "disagree")
    r0, r1 = results[0]["disagree"], results[1]["disagree"]
    assert r0["predict_calls"] == 2 and r1["predict_calls"] == 0  # only rank 0 predicts
    for step in (10, 20):  # rank 0's prediction (newest + 0.5) is applied on both ranks
        assert torch.equal(r1["after"][step], r0["before"][step] + 0.5)


@pytest.mark.parametrize("name", ["nan_rank0", "raise_rank0"])
def test_rejected_prediction_on_rank0_is_skipped_everywhere(results, name):
    assert_identical(results, name)
    for rank in range(WORLD):
        res = results[rank][name]
        assert torch.equal(res["after"][10], res["before"][10])  # skipped: unchanged
        assert torch.equal(res["after"][20], res["before"][20] + 0.5)  # the next nowcast is applied
        skipped = [w for w in res["warnings"] if "skipped" in w]
        assert len(skipped) == 1 and "step 10" in skipped[0], res["warnings"]


def test_failing_nowcaster_on_other_rank_is_irrelevant(results):
    assert_identical(results, "nan_rank1")
    for rank in range(WORLD):
        res = results[rank]["nan_rank1"]
        assert not [w for w in res["warnings"] if "skipped" in w]
        for step in (10, 20):
            assert torch.equal(res["after"][step], res["before"][step] + 0.5)


def test_float64_prediction_is_broadcast_without_rounding(results):
    assert_identical(results, "float64")
    for rank in range(WORLD):
        res = results[rank]["float64"]
        assert res["after"][10].dtype == torch.float64
        assert torch.equal(res["after"][10], res["before"][10] + 1e-9)


def test_fsdp2_ranks_end_identical_and_skip_together(results):
    if results[0]["fsdp2_disagree"] is None:
        pytest.skip("this PyTorch has no FSDP2 fully_shard")
    assert_identical(results, "fsdp2_disagree")
    assert_identical(results, "fsdp2_nan_rank0")
    for rank in range(WORLD):
        res = results[rank]["fsdp2_disagree"]
        for step in (10, 20):  # rank 0's prediction, on every rank (flat() gathers the shards)
            assert torch.equal(res["after"][step], results[0]["fsdp2_disagree"]["before"][step] + 0.5)
        res = results[rank]["fsdp2_nan_rank0"]
        assert torch.equal(res["after"][10], res["before"][10])
        assert torch.equal(res["after"][20], res["before"][20] + 0.5)
        assert len([w for w in res["warnings"] if "skipped" in w]) == 1
    # FSDP2 and DDP see the same gradients: the same run, up to float reduction order
    assert torch.allclose(results[0]["fsdp2_disagree"]["final"], results[0]["disagree"]["final"], atol=1e-5)


def test_fsdp1_is_refused_with_a_clear_error(results):
    """FSDP1's flat shards cannot be placed in a graph (rank 0 would broadcast its own shard's prediction to
    every rank): NiNoAdam refuses them, with or without ``use_orig_params``, whatever ``model`` is."""
    for rank in range(WORLD):
        for case, message in results[rank]["fsdp1"].items():
            assert message is not None, f"rank {rank}, {case}: FSDP1 parameters were accepted"
            assert message.startswith("ValueError") and "FSDP2" in message and "fully_shard" in message, message


def test_ddp_example_runs():
    """examples/ddp_torchrun.py at a tiny size (3 nowcasts): it checks itself that the ranks end identical."""
    pytest.importorskip("sklearn", reason="the example's data needs scikit-learn")
    example = Path(__file__).parents[2] / "examples" / "ddp_torchrun.py"
    logs = launch([example, "--steps", "30", "--period", "10", "--hidden", "16"])
    assert "ranks identical: True" in logs[0], logs[0][-2000:]

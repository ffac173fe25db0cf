"""The fused message-sum kernel (``nowcast/fused.py``) against the torch code it replaces: max |diff| and time.

For each case (a sparse piece, a source-major block and a target-major block of about n edges, hidden size D)
both compute, from the same random e [n, D], W_g [D, D], b_g [D] and c_src [N, D],

    esum[dst(i)] += e[i],   acc[dst(i)] += (e[i] @ W_g^T + b_g) * c_src[src(i)]

the torch side with the unfused steps of ``stream_edge_forward``'s ``accumulate`` (``_Piece`` sums, gamma in a
buffer). Printed per case: max |diff| over both sums, the largest reference value, and the median time of each
side (``torch.cuda.synchronize`` around every run; the first fused run, which compiles, is not timed).

Exits 1 if a case fails to run or differs by more than 1e-4 times max(1, largest reference value): float32 sums
over a thousand edges carry rounding of ~1e-7 of their size, and atomics add in another order than torch.

    python experiments/fused_check.py                      # CUDA: D = 128, n = 1000, 65536, 1000000
    python experiments/fused_check.py --device cpu --small   # a dry run in Triton's interpreter (sets TRITON_INTERPRET)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback

import torch

TOLERANCE = 1e-4


def _cases(small: bool) -> list[tuple[str, int, int, bool | None]]:
    """(name, n_src, n_dst, target_major) per case; target_major None marks a sparse piece of n_src * n_dst edges."""
    # ~1000, ~65536 and ~1M edges; 85 x 768 is what a 65536-edge chunk of a 768-wide source-major block holds.
    shapes = [(10, 10), (40, 25)] if small else [(40, 25), (85, 768), (1302, 768)]
    cases = []
    for n_src, n_dst in shapes:
        cases += [(f"sparse n={n_src * n_dst}", n_src, n_dst, None),
                  (f"block {n_src}x{n_dst} source-major", n_src, n_dst, False),
                  (f"block {n_dst}x{n_src} target-major", n_dst, n_src, True)]
    return cases


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_ms(fn, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def run_case(n_src: int, n_dst: int, target_major: bool | None, d: int, device: torch.device,
             repeats: int) -> dict:
    from nino_optim.graph.blocks import Block
    from nino_optim.nowcast import fused
    from nino_optim.nowcast.stream import _Piece

    gen = torch.Generator(device=device).manual_seed(0)
    n = n_src * n_dst
    if target_major is None:
        num_nodes = max(50, n // 20)  # ~20 edges per target, as in a sparse chunk of a real graph
        src, dst = (torch.randint(0, num_nodes, (n,), generator=gen, device=device) for _ in range(2))
        piece = _Piece(ids=torch.arange(n, device=device), src=src, dst=dst)
    else:
        num_nodes = n_src + n_dst
        piece = _Piece(block=Block(0, 0, n_src, n_src, n_dst, target_major))
    e = torch.randn(n, d, generator=gen, device=device)
    weight = torch.randn(d, d, generator=gen, device=device) / d ** 0.5
    bias = torch.randn(d, generator=gen, device=device)
    c_src = torch.randn(num_nodes, d, generator=gen, device=device)
    mid = torch.empty(n, d, device=device)

    def torch_sums(esum, acc):  # accumulate()'s unfused steps
        piece.sum_at_dst_(esum, e)
        gamma = torch.addmm(bias, e, weight.t(), out=mid)
        piece.mul_src_(gamma, c_src)
        piece.sum_at_dst_(acc, gamma)

    def fused_sums(esum, acc):
        fused.message_sums_(esum, acc, e, weight, bias, c_src, block=piece.block, src=piece.src, dst=piece.dst)

    results = {}
    for name, fn in (("torch", torch_sums), ("fused", fused_sums)):
        sums = torch.zeros(num_nodes, d, device=device), torch.zeros(num_nodes, d, device=device)
        fn(*sums)  # also the warm-up: Triton compiles on the first launch of each variant
        _sync(device)
        results[name] = sums
        scratch = torch.zeros_like(sums[0]), torch.zeros_like(sums[1])
        results[name + "_ms"] = _median_ms(lambda: fn(*scratch), device, repeats)
    diff = max(float((f - t).abs().max()) for f, t in zip(results["fused"], results["torch"]))
    scale = max(float(t.abs().max()) for t in results["torch"])
    return {"edges": n, "max_abs_diff": diff, "max_abs_ref": scale, "torch_ms": results["torch_ms"],
            "fused_ms": results["fused_ms"], "ok": diff <= TOLERANCE * max(1.0, scale)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--small", action="store_true", help="small shapes and D = 32 (for the interpreter)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 10, --small 2)")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the kernel is then interpreted
    elif not torch.cuda.is_available():
        print("no CUDA GPU: run with --device cpu --small for the interpreter dry run", flush=True)
        return 2
    import triton

    from nino_optim.nowcast import fused

    device = torch.device(args.device)
    if not fused.runs_on(device):
        print(f"the fused kernel cannot run on {device} here (TRITON_INTERPRET=1 is needed for the CPU)", flush=True)
        return 2
    d = 32 if args.small else 128
    repeats = args.repeats or (2 if args.small else 10)
    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU, Triton interpreter"
    print(f"{where}; torch {torch.__version__}, triton {triton.__version__}; D = {d}, {repeats} timed runs",
          flush=True)
    failures = 0
    started = time.perf_counter()
    for name, n_src, n_dst, target_major in _cases(args.small):
        t0 = time.perf_counter()
        try:
            r = run_case(n_src, n_dst, target_major, d, device, repeats)
        except Exception:  # one broken case must not hide the others
            failures += 1
            print(f"{name}: FAILED to run\n{traceback.format_exc(limit=4)}", flush=True)
            continue
        failures += not r["ok"]
        print(f"{name}: {'ok' if r['ok'] else 'DIFFERS'}  max|diff| {r['max_abs_diff']:.2e} "
              f"(max|ref| {r['max_abs_ref']:.3g})  torch {r['torch_ms']:.3f} ms  fused {r['fused_ms']:.3f} ms  "
              f"({r['torch_ms'] / r['fused_ms']:.2f}x)  [{time.perf_counter() - t0:.1f} s]", flush=True)
    print(f"{'FAIL' if failures else 'PASS'}: {failures} case(s) failed; {time.perf_counter() - started:.1f} s",
          flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

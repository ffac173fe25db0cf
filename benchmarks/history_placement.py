"""Where NiNoAdam's history lives: capture time, read time and accelerator memory of each placement.

The history is ``context`` captured copies of the model's parameters (``nino_optim.history.History``). For a
byte-level GPT (``nino_optim.bench.lm.TinyGPT``, vocabulary 256, scaled by width and depth to about 1M, 10M or
100M parameters, built directly on the device) each of four placements is measured:

* parameters' device, float32 (``history_device=<the parameters' device>``);
* pinned CPU, float32 (the default for CUDA parameters: asynchronous device-to-host copies at capture);
* parameters' device, bfloat16 (``history_dtype=torch.bfloat16``);
* pinned CPU, bfloat16.

Columns:

* capture ms, call / complete: the median over ``--repeats`` captures (after one warm-up) of the time the
  ``capture`` call takes (what the training loop waits for) and of the time until the copy has landed
  (``History.synchronize`` and ``torch.cuda.synchronize`` after it); the device is synchronised before each;
* read ms: the median time of ``states(device)`` to the device the nowcaster runs on (the parameters' device,
  the default ``nowcaster_device``), until the states are there: a view for a history already there, one
  host-to-device copy of [P, c] for a CPU history of CUDA parameters;
* GPU MiB held / peak: ``torch.cuda.memory_allocated`` after construction and the captures, and
  ``torch.cuda.max_memory_allocated`` through the captures and a read, each minus what was allocated before the
  history was made (the model itself excluded); "n/a" without CUDA;
* host MiB: the history's CPU memory (0 when it is on the accelerator).

Without CUDA the parameters' device is the CPU and pinning needs CUDA, so both placements are the same plain CPU
buffer; the output says so. Each size runs in this process, one placement after the other, and the history of
one placement is freed before the next is made.

    python benchmarks/history_placement.py [--sizes 1M 10M 100M] [--repeats 20] [--context 5]
                                           [--device auto|cpu|cuda] [--threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time

import torch

from nino_optim.bench.lm import LMTask, TinyGPT
from nino_optim.history import History, history_device_for

# width, layers, heads: about 12 * layers * width^2 parameters (vocabulary 256, 64 positions)
SIZES = {"1M": (128, 5, 4), "10M": (384, 6, 6), "100M": (768, 14, 12)}
MIB = 2 ** 20


def build(size: str, device: torch.device) -> list[torch.Tensor]:
    """The parameters (tied ones once) of a TinyGPT of about ``size`` parameters, made on ``device``."""
    width, layers, heads = SIZES[size]
    torch.manual_seed(0)
    with torch.device(device):
        model = TinyGPT(LMTask(width=width, layers=layers, heads=heads))
    return [p.detach() for p in model.parameters()]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(params: list[torch.Tensor], place: str, dtype: torch.dtype, context: int, repeats: int) -> dict:
    """One placement: ``place`` is ``"params"`` (the parameters' device) or ``"pinned"`` (the CPU default)."""
    device = params[0].device
    cuda = device.type == "cuda"
    where, pin = history_device_for(device, device if place == "params" else None)
    gc.collect()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    history = History(params, context, where, dtype, pin_memory=pin)

    calls, completes = [], []
    for i in range(repeats + 1):  # the first is a warm-up
        _sync(device)
        start = time.perf_counter()
        history.capture(params, i % context)
        called = time.perf_counter()
        history.synchronize()
        _sync(device)
        done = time.perf_counter()
        if i:
            calls.append(called - start)
            completes.append(done - start)
    held = torch.cuda.memory_allocated(device) - base if cuda else None

    reads = []
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        states = history.states(device)
        _sync(device)
        if i:
            reads.append(time.perf_counter() - start)
        assert states.shape == (history.buffer.shape[1], context) and states.device.type == device.type
        del states
    peak = torch.cuda.max_memory_allocated(device) - base if cuda else None
    row = {"history": f"{history.buffer.device.type}{' pinned' if history.pinned else ''}",
           "dtype": str(dtype).replace("torch.", ""),
           "capture_call_ms": 1e3 * statistics.median(calls), "capture_done_ms": 1e3 * statistics.median(completes),
           "read_ms": 1e3 * statistics.median(reads),
           "gpu_held_mib": None if held is None else held / MIB, "gpu_peak_mib": None if peak is None else peak / MIB,
           "host_mib": history.buffer.nbytes / MIB if history.buffer.device.type == "cpu" else 0.0}
    del history
    return row


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}); " + text
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1M", "10M", "100M"], choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=20, help="timed captures and reads per placement")
    parser.add_argument("--context", type=int, default=5, help="slots of the history (NiNoAdam's context)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())

    print(f"# History placement: {machine(device)}\n")
    print(f"`python benchmarks/history_placement.py --sizes {' '.join(args.sizes)} --repeats {args.repeats} "
          f"--context {args.context} --device {args.device}{f' --threads {args.threads}' if args.threads else ''}`"
          f" (parameters on {device}, context {args.context}, median of {args.repeats})\n")
    if device.type != "cuda":
        print("No CUDA: the parameters' device is the CPU and pinning needs CUDA, so the 'parameters' device' and "
              "'pinned CPU' rows are the same plain CPU buffer (the default on a CPU); GPU memory is n/a.\n")
    print("| model | params | placement | history | dtype | capture ms (call / complete) | read ms "
          "(states() to " + device.type + ") | GPU MiB held / peak | host MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for size in args.sizes:
        params = build(size, device)
        count = sum(p.numel() for p in params)
        for place, dtype in (("params", torch.float32), ("pinned", torch.float32),
                             ("params", torch.bfloat16), ("pinned", torch.bfloat16)):
            row = {"size": size, "params": count, "placement": "parameters' device" if place == "params" else
                   "pinned CPU", "device": str(device), **measure(params, place, dtype, args.context, args.repeats)}
            rows.append(row)
            gpu = "n/a" if row["gpu_held_mib"] is None else f"{row['gpu_held_mib']:.1f} / {row['gpu_peak_mib']:.1f}"
            print(f"| {size} | {count / 1e6:.2f}M | {row['placement']} | {row['history']} | {row['dtype']} | "
                  f"{row['capture_call_ms']:.3g} / {row['capture_done_ms']:.3g} | {row['read_ms']:.3g} | {gpu} | "
                  f"{row['host_mib']:.1f} |", flush=True)
        del params
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(device), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

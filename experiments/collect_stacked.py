"""Collection speed: M runs of FM-16's convnet one after the other (``run_one``) vs stacked (``run_stack``).

Both record the same trajectories (states every 40 steps, the zoo's seeds and learning rates); prints the run-steps
per second of each and their ratio. On a GPU, where one 14k-parameter convnet cannot fill the device, stacking is
meant to pay; on a CPU core it is slower (0.79x at 4, 0.47x at 16 on the project's 2-core machine).

    python experiments/collect_stacked.py --members 8 --steps 400 --device cuda
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import torch

from nino_optim.bench.data import load_fashion_mnist
from nino_optim.metatrain.collect import run_one
from nino_optim.metatrain.stacked import run_stack
from nino_optim.metatrain.zoo import make_zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[8])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--single", type=int, default=2, help="single runs timed (their mean is the baseline)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_fashion_mnist()
    fm16 = [s for s in make_zoo(400, zoo_seed=11, fm16_share=1.0, save_every=40) if s.arch["kind"] == "convnet"]
    specs = [replace(s, steps=args.steps) for s in fm16]

    def timed(fn) -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as root:
            fn(root)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run_one(replace(specs[0], steps=40), data, tempfile.mkdtemp(), device=args.device)  # warm-up
    single = sum(timed(lambda root, s=s: run_one(s, data, root, device=args.device))
                 for s in specs[:args.single]) / args.single
    print(f"{args.device}, torch {torch.__version__}, FM-16 convnet, {args.steps} steps, states every 40")
    print(f"single run: {single:.2f} s, {args.steps / single:.0f} run-steps/s")
    for m in args.members:
        seconds = timed(lambda root: run_stack(specs[:m], data, root, device=args.device))
        rate = m * args.steps / seconds
        print(f"{m:>3} stacked: {seconds:.2f} s, {rate:.0f} run-steps/s, {rate * single / args.steps:.2f}x single")


if __name__ == "__main__":
    main()

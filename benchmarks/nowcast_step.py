"""Wall time and extra peak memory of ONE NiNo nowcast for GPT-2-style models, chunked vs unchunked.

Each model is a Hugging Face ``GPT2LMHeadModel`` built from a ``GPT2Config`` (GPT-2 vocabulary of 50257,
1024 positions; nothing is downloaded). Each size runs in a fresh subprocess, so its memory is its own:

* build s / LPE s: ``nino_optim.build_neural_graph(model)`` and the first ``graph.lpe``; both are done before
  the nowcast and are NOT part of its time or memory (they are cached with the graph in real use);
* nowcast s: wall time of ``nowcaster.predict(graph, states, k=40)`` with the official checkpoint
  (``nino_no_posw.pt``) and ``states`` = 5 random-walk states [P, 5] (float32) of the model's flat parameters;
* extra GB: the process's peak RSS during the nowcast (``VmHWM``, reset through ``/proc/self/clear_refs``
  just before it) minus its RSS just before it; so the graph, LPE, states and checkpoint are excluded;
* one row per ``chunk_size`` (``--chunks``; ``all`` = the number of edges, i.e. no chunking) and edge state
  (``--edge-states``: float32, bfloat16 or recompute; see ``nowcast/stream.py``), and the max abs difference of
  each row's prediction from the first row's (float32 rows must agree to ~1e-5);
* % of 1000 steps: nowcast s / (1000 x 10 s), a nominal training step, and nowcast s / (1000 x step s) with
  step s = one AdamW step of the model at 8 x 1024 tokens measured in the same process (``--train-step``).

The child is bounded: its address space may grow by at most ``--max-gb`` beyond what it holds before the
nowcasts (``RLIMIT_AS``), and the parent kills it if its RSS passes ``--max-gb`` beyond its start or it runs past
``--timeout``; either is reported in the table rather than raised. ``--profile FILE`` writes cProfile
statistics of the first nowcast of each size (FILE gets the size appended).

Needs the official checkpoint at ``$NINO_REFERENCE_DIR/upstream-checkpoints/nino_no_posw.pt``.

    python benchmarks/nowcast_step.py [--sizes 1M 3.4M 7M 30M] [--chunks 65536 all] [--edge-states auto]
                                      [--timeout 900]
                                      [--max-gb 16] [--train-step 3.4M] [--json out.json] [--profile prof]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

from _measure import GB, cap_address_space, peak_rss, reset_peak_rss, run_watched, status_bytes

# name: (n_embd, n_layer, n_head)
SIZES = {
    "1M": (24, 3, 3),
    "3.4M": (64, 3, 4),
    "7M": (128, 4, 4),
    "30M": (384, 6, 6),
}
# The official checkpoint: $NINO_REFERENCE_DIR/upstream-checkpoints/nino_no_posw.pt (children inherit the variable).
_REFERENCE = os.environ.get("NINO_REFERENCE_DIR")
CHECKPOINT = os.path.join(_REFERENCE, "upstream-checkpoints", "nino_no_posw.pt") if _REFERENCE else ""
K = 40
CTX = 5
# The official implementation on a 2-core CPU machine: nowcast s, extra GB.
OFFICIAL = {"3.4M": (65.5, 6.5)}
# Targets: at most a quarter of the official time and a third of its extra memory.
TARGET = {"3.4M": (16.0, 2.2)}
NOMINAL_STEP_S = 10.0  # ~10 s per training step (8 x 1024 tokens) on a 2-core CPU machine
MAX_SHARE = 0.3  # target: at most this % of 1000 training steps

def _random_walk_states(flat, steps: int, seed: int = 0):
    """[P, steps] float32: flat, then a random walk from it (oldest to newest), step ~ 1e-3 * per-element noise."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    states = torch.empty(flat.numel(), steps)
    states[:, 0] = flat
    for t in range(1, steps):
        states[:, t] = states[:, t - 1] + 1e-3 * torch.randn(flat.numel(), generator=gen)
    return states


def _train_step_s(model, steps: int = 2) -> float:
    """Seconds of one AdamW step at 8 x 1024 tokens (the last of ``steps``; the first ones warm up)."""
    import torch

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (8, 1024), generator=gen)
    took = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        took = time.perf_counter() - t0
    model.eval()
    return took


def child(size: str, chunks: list[str], edge_states: list[str], max_gb: float, train_step: bool,
          profile: str | None, out: str) -> None:
    """Build one model's graph, run the nowcasts and write the measurements as JSON to ``out``."""
    import warnings

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import nino_optim
    from nino_optim import build_neural_graph

    d, layers, heads = SIZES[size]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, n_embd=d, n_layer=layers,
                                       n_head=heads))
    params = sum(p.numel() for p in model.parameters())
    result: dict = {"size": size, "params": params, "threads": torch.get_num_threads(), "runs": []}

    def save() -> None:
        Path(out).write_text(json.dumps(result))

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            graph = build_neural_graph(model)
            t1 = time.perf_counter()
            lpe = graph.lpe
            t2 = time.perf_counter()
        result.update(build_s=t1 - t0, lpe_s=t2 - t1, nodes=graph.num_nodes, edges=graph.num_edges,
                      lpe_shape=list(lpe.shape), placed=int(graph.placed_mask.sum()),
                      warnings=[str(w.message)[:300] for w in caught])
        flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach().float()
        if flat.numel() != graph.num_params:
            raise RuntimeError(f"flat parameters {flat.numel()} != graph parameters {graph.num_params}")
        states = _random_walk_states(flat, CTX)
        nowcaster = nino_optim.load_nowcaster(CHECKPOINT)
        save()
    except Exception as err:  # noqa: BLE001 - reported in the table
        result["error"] = f"setup: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        save()
        return

    # Bound the nowcasts: the address space may grow by max_gb from here.
    cap_address_space(max_gb)

    reference = None
    combos = [(spec, state) for spec in chunks for state in edge_states]
    for i, (spec, state) in enumerate(combos):
        chunk = graph.num_edges if spec == "all" else int(spec)
        run = {"chunk": spec, "chunk_size": chunk, "edge_state": state}
        result["runs"].append(run)
        nowcaster.chunk_size, nowcaster.edge_state = chunk, state
        gc.collect()
        reset = reset_peak_rss()
        before = status_bytes("VmRSS")
        if not reset:
            before = max(before, peak_rss(False))
        run["peak_reset"] = reset
        prof = None
        if profile and i == 0:
            import cProfile

            prof = cProfile.Profile()
        load0 = os.getloadavg()[0]
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            t0 = time.perf_counter()
            if prof:
                prof.enable()
            pred = nowcaster.predict(graph, states, k=K)
            if prof:
                prof.disable()
            run["nowcast_s"] = time.perf_counter() - t0
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            run.update(user_s=ru1.ru_utime - ru0.ru_utime, sys_s=ru1.ru_stime - ru0.ru_stime,
                       load_before=load0, load_after=os.getloadavg()[0])
            run["extra_gb"] = (peak_rss(reset) - before) / GB
            run["finite"] = bool(torch.isfinite(pred).all())
            if reference is None:
                reference = pred
                run["max_abs_diff"] = 0.0
                run["mean_abs_change"] = float((pred - states[:, -1]).abs().mean())
            else:
                run["max_abs_diff"] = float((pred - reference).abs().max())
            del pred
        except MemoryError:
            run["error"] = f"out of memory (> {max_gb:g} GB address-space cap)"
            run["extra_gb"] = (peak_rss(reset) - before) / GB
        except Exception as err:  # noqa: BLE001 - reported in the table
            if "can't allocate memory" in str(err):  # torch's allocator raises RuntimeError, not MemoryError
                run["error"] = f"out of memory (> {max_gb:g} GB address-space cap)"
            else:
                run["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            run["extra_gb"] = (peak_rss(reset) - before) / GB
        if prof:
            import pstats

            path = f"{profile}.{size}"
            prof.dump_stats(path + ".pstats")
            with open(path + ".txt", "w") as f:
                pstats.Stats(prof, stream=f).sort_stats("tottime").print_stats(40)
                pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(40)
            run["profile"] = path + ".txt"
        save()

    if train_step:
        try:
            del states, reference
            gc.collect()
            result["train_step_s"] = _train_step_s(model)
        except MemoryError:
            result["train_step_error"] = "out of memory"
        except Exception as err:  # noqa: BLE001
            result["train_step_error"] = f"{type(err).__name__}: {str(err)[:200]}"
        save()


def run_size(size: str, args) -> dict:
    """Run one size in a fresh interpreter; watch its RSS; return its measurements or the reason it has none."""
    out = Path(f"/tmp/nowcast_step_{os.getpid()}_{size}.json")
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", size, "--chunks", *args.chunks, "--edge-states", *args.edge_states,
           "--max-gb", str(args.max_gb), "--out", str(out)]
    if size in args.train_step:
        cmd.append("--do-train-step")
    if args.profile:
        cmd += ["--profile", str(args.profile)]
    # model, graph, states and interpreter come on top of the nowcast's max_gb
    log, wall, reason, peak_seen, returncode = run_watched(cmd, args.timeout, args.max_gb + 6, poll_s=0.1)
    if out.exists():
        result = json.loads(out.read_text())  # partial results survive a kill
        if reason:
            result["error"] = reason if "error" not in result else result["error"] + "; " + reason
    else:
        tail = log.strip().splitlines()[-1][:200] if log.strip() else f"exit code {returncode}"
        result = {"size": size, "error": reason or f"child failed: {tail}", "runs": []}
    if returncode not in (0, None) and not reason and "error" not in result:
        tail = log.strip().splitlines()[-1][:200] if log.strip() else ""
        result["error"] = f"child exit code {returncode}: {tail}"
    out.unlink(missing_ok=True)
    result.update(wall_s=wall, watched_peak_gb=peak_seen / GB)
    return result


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[dict]) -> str:
    head = ("| model | params | edges | build s | LPE s | chunk_size, edge state | nowcast s | CPU s (user+sys) | load | extra GB "
            "| max abs diff "
            "| step s | % of 1000 × 10 s | % of 1000 measured steps | official s / GB | target s / GB |")
    rows = [head, "|" + "---|" * (head.count(" | ") + 1)]
    for r in results:
        size = r["size"]
        d, layers, heads = SIZES[size]
        name = f"{size} (d={d}, L={layers}, H={heads})"
        params = f"{r['params'] / 1e6:.2f}M" if "params" in r else "-"
        edges = f"{r['edges']:,}" if "edges" in r else "-"
        official, target = OFFICIAL.get(size), TARGET.get(size)
        off = f"{official[0]:.1f} / {official[1]:.1f}" if official else "-"
        tgt = f"≤ {target[0]:.0f} / ≤ {target[1]:.1f}" if target else "-"
        step = r.get("train_step_s")
        step_txt = f"{step:.1f}" if step else "-"
        lead = f"| {name} | {params} | {edges} | {_fmt(r.get('build_s'), '.1f')} | {_fmt(r.get('lpe_s'), '.1f')}"
        if not r.get("runs"):
            rows.append(f"{lead} | - | FAILED: {r.get('error', '?')} | - | - | - | - | - | - | - | {off} | {tgt} |")
            continue
        for run in r["runs"]:
            label = (f"{run['chunk_size']:,}" + (" (all)" if run["chunk"] == "all" else "")
                     + f" {run.get('edge_state', 'float32')}")
            if "nowcast_s" not in run:
                rows.append(f"{lead} | {label} | FAILED: {run.get('error', r.get('error', '?'))} | - | - "
                            f"| {_fmt(run.get('extra_gb'), '.2f')} | - | {step_txt} | - | - | {off} | {tgt} |")
                continue
            share = 100 * run["nowcast_s"] / (1000 * NOMINAL_STEP_S)
            measured = f"{100 * run['nowcast_s'] / (1000 * step):.3f}" if step else "-"
            ok = ""
            if target:
                ok = " ✓" if run["nowcast_s"] <= target[0] and run["extra_gb"] <= target[1] else " ✗"
            cpu = f"{run['user_s']:.1f}+{run['sys_s']:.1f}" if "user_s" in run else "-"
            load = f"{run['load_before']:.1f}" if "load_before" in run else "-"
            rows.append(f"{lead} | {label} | {run['nowcast_s']:.1f}{ok} | {cpu} | {load} | {run['extra_gb']:.2f} | "
                        f"{run['max_abs_diff']:.1e} | {step_txt} | {share:.3f} | {measured} | {off} | {tgt} |")
        if r.get("error") and all("nowcast_s" in run for run in r["runs"]):
            rows.append(f"{lead} | - | note: {r['error']} | - | - | - | - | - | - | - | {off} | {tgt} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--chunks", nargs="+", default=[str(2**16), "all"],
                        help="chunk_size values (integers, or 'all' = number of edges); the first is the reference")
    parser.add_argument("--edge-states", nargs="+", default=["auto"], choices=["auto", "float32", "bfloat16", "recompute"],
                        help="how edge features live between passes (each combined with every chunk size)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per size (whole subprocess)")
    parser.add_argument("--max-gb", type=float, default=16.0, help="memory cap for the nowcasts per size, GB")
    parser.add_argument("--train-step", nargs="*", default=["3.4M"], choices=list(SIZES),
                        help="sizes whose AdamW step at 8 x 1024 tokens is measured in the same process")
    parser.add_argument("--profile", type=Path, help="cProfile the first nowcast of each size into FILE.<size>.*")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--do-train-step", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for c in args.chunks:
        if c != "all" and not c.isdigit():
            parser.error(f"--chunks takes integers or 'all', got {c!r}")
    if not os.path.isfile(CHECKPOINT):
        where = f"not at {CHECKPOINT}" if CHECKPOINT else "NINO_REFERENCE_DIR is not set"
        parser.error(f"needs the official checkpoint ({where}): set NINO_REFERENCE_DIR to the directory holding "
                     "upstream-checkpoints/nino_no_posw.pt")
    if args.child:
        child(args.child, args.chunks, args.edge_states, args.max_gb, args.do_train_step,
              str(args.profile) if args.profile else None, args.out)
        return
    results = []
    for size in args.sizes:
        r = run_size(size, args)
        results.append(r)
        runs = ", ".join(f"chunk {x['chunk']} {x.get('edge_state', '')}: " + (f"{x['nowcast_s']:.1f} s, {x['extra_gb']:.2f} GB"
                                                    if "nowcast_s" in x else x.get("error", "?"))
                         for x in r.get("runs", []))
        print(f"[{size}] build {_fmt(r.get('build_s'), '.1f')} s, LPE {_fmt(r.get('lpe_s'), '.1f')} s; {runs}"
              f"{'; ' + r['error'] if r.get('error') else ''} (subprocess wall {r['wall_s']:.1f} s, "
              f"watched peak RSS {r['watched_peak_gb']:.2f} GB)", file=sys.stderr, flush=True)
        for w in r.get("warnings", []):
            print(f"[{size}] warning: {w}", file=sys.stderr)
    threads = next((r["threads"] for r in results if "threads" in r), "?")
    print(f"One nowcast (`predict(graph, states[P, 5], k={K})`, official checkpoint {Path(CHECKPOINT).name}) of "
          f"GPT-2-style models (vocab 50257, 1024 positions), each size in a fresh process; torch threads "
          f"{threads}, {os.cpu_count()} CPUs. Graph build and LPE are excluded from the nowcast time and memory. "
          f"CPU s: the process's user+sys seconds during the nowcast; load: the 1-minute load average "
          f"just before it (other jobs on the machine slow the wall time). Max abs diff: against the first "
          f"chunk_size's prediction. Step s: one AdamW step at 8 x 1024 tokens "
          f"measured in the same process; % of 1000 × 10 s uses a nominal 10 s step. Official figures: the official "
          f"implementation on a 2-core CPU; targets: a quarter of its time, a third of its memory, "
          f"≤ {MAX_SHARE}% of 1000 steps.\n")
    print(table(results))
    if any(not x.get("peak_reset", True) for r in results for x in r.get("runs", [])):
        print("\nNote: the RSS high-water mark could not be reset; extra memory is measured against the peak "
              "before the nowcast.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

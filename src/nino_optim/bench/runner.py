"""``nino-optim bench``: steps to target for several methods and seeds, one JSON results file per run.

Every (task, method, seed) run trains the task's convnet on the paper's protocol (batch 128, Adam lr 6e-3 without
weight decay, the official loop's batch order: a shuffled DataLoader re-seeded with ``seed + epoch``) and writes
``<out>/<task>/<method>__seed<seed>.json``. A file already there is skipped, so an interrupted benchmark resumes;
files are written atomically (a temporary file, then ``os.replace``). With ``workers >= 1`` each run is a fresh
process with one torch thread (so its peak RSS is its own); ``workers = 0`` runs in this process (for tests).

Methods are nowcaster specs, named: ``adam`` (plain Adam, no nowcast), ``linefit``, ``linefit+``, ``default``,
``nino`` / ``wnn+`` (the official ``nino_no_posw.pt`` / ``nino_mlp.pt``), ``NAME=SPEC`` for any spec
``load_nowcaster`` takes, or a bare path (named after the file). Each results file records a fingerprint of
its method's nowcaster (``nowcaster_sha256``), so that resuming with other weights under the same name (a new
``default``, say) is refused instead of mixing two sets of weights in one table.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .data import load_fashion_mnist
from .lm import LM_TASK, train_lm_steps_to_target
from .lr_schedule import attach_schedule, check_schedule
from .text import load_kjv
from .steps_to_target import first_reached, train_steps_to_target
from .tasks import TASKS

SCHEMA = 1
STEPS_CAP_DEFAULT = 10_000
# The ladder of easier thresholds before each task's target (far less noisy than the target alone);
# for the LM task they are validation perplexities (lower is better).
LADDERS = {"fm16": (0.885, 0.890), "fm32": (0.895, 0.900), "vit": (0.855, 0.865), "lm": LM_TASK.ladder}
TASK_NAMES = sorted(TASKS) + ["lm"]
# Config entries that only read the curve (the report can set others): results that differ in them alone share one
# protocol, for resuming and for the report.
THRESHOLD_KEYS = ("target", "ladder")
# The official checkpoints the names "nino" and "wnn+" stand for.
OFFICIAL_FILES = {"nino": "nino_no_posw.pt", "wnn+": "nino_mlp.pt"}
# The directory of reference files: the official checkpoints are in its upstream-checkpoints/.
REFERENCE_ENV = "NINO_REFERENCE_DIR"
# The paper's Table 2 (reduction in % of the steps to the target vs Adam), keyed by method kind.
PAPER_TABLE2 = {"fm16": {"linefit": 27.0, "linefit+": 27.3, "wnn+": 33.8, "nino": 46.8},
                "fm32": {"linefit": 16.6, "linefit+": 23.3, "wnn+": 31.6, "nino": 46.8}}
_PAPER_KIND_BY_FILE = {"nino_no_posw.pt": "nino", "nino_mlp.pt": "wnn+"}


def official_dir() -> Path | None:
    """Where the official checkpoints are: ``$NINO_REFERENCE_DIR/upstream-checkpoints``, or None when the
    variable is not set."""
    root = os.environ.get(REFERENCE_ENV)
    return Path(root) / "upstream-checkpoints" if root else None


@dataclass(frozen=True)
class Method:
    """A named method: ``spec`` is the nowcaster spec (None: plain Adam); ``paper`` its Table 2 row, if any;
    ``options`` further ``NiNoAdam`` keyword arguments, as (name, value) pairs."""

    name: str
    spec: str | None
    paper: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def slug(self) -> str:
        """The name as it appears in file names."""
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", self.name)


def parse_method(text: str) -> Method:
    """``adam`` | ``linefit`` | ``linefit+`` | ``default`` | ``nino`` | ``wnn+`` | ``NAME=SPEC`` | a path, each
    optionally followed by ``NiNoAdam`` keyword arguments in brackets: ``plain=default[schedule_aware=false]``,
    ``x=nino[k_decay=0;period=500]``."""
    text = text.strip()
    if not text:
        raise ValueError("empty method name")
    match = re.fullmatch(r"(.*?)\[([^\]]*)\]", text)
    if match:
        method = parse_method(match.group(1))
        if method.spec is None:
            raise ValueError(f"method {text!r}: options are NiNoAdam arguments; plain Adam takes none")
        return Method(method.name, method.spec, method.paper, _parse_options(match.group(2), text))
    if "=" in text:
        name, spec = (t.strip() for t in text.split("=", 1))
        if not name or not spec:
            raise ValueError(f"method {text!r}: expected NAME=SPEC")
        if spec.lower() == "adam":
            return Method(name, None, None)
        return Method(name, spec, _paper_kind(spec))
    low = text.lower()
    if low == "adam":
        return Method("adam", None, None)
    if low in ("linefit", "linefit+", "default"):
        return Method(low, low, None if low == "default" else low)  # "default" may change: no paper row
    if low in OFFICIAL_FILES:
        root = official_dir()
        path = root / OFFICIAL_FILES[low] if root else None
        if path is None or not path.is_file():
            where = f"not in {root}" if root else f"{REFERENCE_ENV} is not set"
            raise ValueError(f"method {low!r} is the official checkpoint {OFFICIAL_FILES[low]} ({where}): set "
                             f"{REFERENCE_ENV} to the directory holding upstream-checkpoints/{OFFICIAL_FILES[low]}, "
                             f"or pass {low}=PATH")
        return Method(low, str(path), low)
    name = Path(text).stem if Path(text).suffix else text.replace("/", "_")
    return Method(name, text, _paper_kind(text))


def _parse_options(text: str, method: str) -> tuple[tuple[str, Any], ...]:
    """``"a=1;b=false"`` -> ``(("a", 1), ("b", False))``: numbers, ``true``/``false``/``none``, else strings."""
    options = []
    for item in (t.strip() for t in text.split(";")):
        if not item:
            continue
        key, sep, value = (t.strip() for t in item.partition("="))
        if not sep or not key.isidentifier():
            raise ValueError(f"method {method!r}: expected [name=value;...], got {item!r}")
        literal = {"true": True, "false": False, "none": None}.get(value.lower(), value)
        if literal is value:
            for kind in (int, float):
                try:
                    literal = kind(value)
                    break
                except ValueError:
                    pass
        options.append((key, literal))
    return tuple(options)


def _paper_kind(spec: str) -> str | None:
    low = spec.lower()
    if low in ("linefit", "linefit+"):
        return low
    return _PAPER_KIND_BY_FILE.get(Path(spec).name)


def parse_methods(text: str | list[str]) -> list[Method]:
    """A comma-separated list (or a list of such strings) of methods; names must be unique."""
    parts = [p for t in ([text] if isinstance(text, str) else text) for p in t.split(",") if p.strip()]
    methods = [parse_method(p) for p in parts]
    slugs = [m.slug for m in methods]
    dup = sorted({s for s in slugs if slugs.count(s) > 1})
    if dup:
        raise ValueError(f"methods named twice: {dup}; name them with NAME=SPEC")
    return methods


@dataclass
class BenchConfig:
    """The protocol shared by every run of a benchmark (stored in each results file; resuming checks it)."""

    task: str = "fm16"
    steps: int = STEPS_CAP_DEFAULT
    eval_every: int = 25
    batch_size: int | None = None  # None: the task's (128; 32 windows for lm)
    lr: float | None = None  # None: the task's (6e-3; lm: its tuned AdamW lr)
    period: int = 1000
    context: int = 5
    order: str = "dataloader"
    target: float | None = None  # None: the task's (0.895 / 0.905)
    ladder: tuple[float, ...] | None = None  # None: LADDERS[task]
    train_examples: int | None = None  # None: the paper split (55,000); fewer for quick checks
    test_examples: int | None = None  # None: all 10,000
    schedule: str = "constant"  # or "cosine": linear warmup, then cosine decay to zero at ``steps``
    warmup: float = 0.05  # warmup steps as a fraction of ``steps`` (cosine only)

    def __post_init__(self):
        self.task = self.task.lower().replace("-", "")
        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; choose from {TASK_NAMES}")
        task = LM_TASK if self.task == "lm" else TASKS[self.task]
        self.lr = task.lr if self.lr is None else float(self.lr)
        self.batch_size = (LM_TASK.batch_size if self.task == "lm" else 128) if self.batch_size is None \
            else int(self.batch_size)
        self.target = task.target if self.target is None else float(self.target)
        self.ladder = tuple(sorted(float(t) for t in (LADDERS[self.task] if self.ladder is None else self.ladder)))
        if self.steps <= 0 or self.eval_every <= 0:
            raise ValueError("steps and eval_every must be positive")
        check_schedule(self.schedule, self.steps, self.warmup)

    @property
    def higher_is_better(self) -> bool:
        """Test accuracy (image tasks) rises; validation perplexity (lm) falls."""
        return self.task != "lm"

    @property
    def thresholds(self) -> list[float]:
        """The ladder and the target, ascending."""
        return sorted(set(self.ladder) | {self.target})

    def protocol(self) -> dict:
        """What must agree between an existing results file and this run for it to be skipped."""
        d = asdict(self)
        d["ladder"] = list(d["ladder"])
        if self.schedule == "constant":  # results files from before schedules existed stay valid
            del d["schedule"], d["warmup"]
        if self.task == "lm":  # the LM task's fixed settings, so that changing them invalidates old results
            d["weight_decay"] = LM_TASK.weight_decay
            d["model"] = LM_TASK.model
        return d


def result_path(out: str | os.PathLike, task: str, method: Method, seed: int) -> Path:
    """``<out>/<task>/<method>__seed<seed>.json``."""
    return Path(out) / task / f"{method.slug}__seed{seed}.json"


def nowcaster_fingerprint(spec: str | None) -> str | None:
    """The first 16 hex digits of a SHA-256 over the nowcaster's class, settings (a module's ``config``, another
    object's attributes: Linefit's ``weighted``) and tensors (names, dtypes, shapes, values); None for plain
    Adam. Equal weights give equal fingerprints wherever they were loaded from (a directory, a ``.pt``, the Hub)."""
    if spec is None:
        return None
    from ..nowcast.hub import load_nowcaster

    nowcaster = load_nowcaster(spec)
    module = isinstance(nowcaster, torch.nn.Module)
    settings = getattr(nowcaster, "config", None) if module else vars(nowcaster)
    h = hashlib.sha256(f"{type(nowcaster).__module__}.{type(nowcaster).__qualname__} {settings!r}".encode())
    state = nowcaster.state_dict() if module else {}
    for name, tensor in sorted(state.items()):
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_json_safe(data), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _device_name(device: str) -> str:
    """"cpu", or the accelerator's name (e.g. "cuda: NVIDIA H200")."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return dev.type


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def make_optimizer_factory(method: Method, cfg: BenchConfig) -> Callable:
    """``model -> optimizer``: Adam(lr, no weight decay) for the image tasks, AdamW(lr, the task's weight decay)
    for lm, or NiNoAdam around that base with the method's nowcaster and options; its learning rate follows
    ``cfg.schedule`` (a scheduler stepped after every optimizer step)."""
    base = torch.optim.AdamW if cfg.task == "lm" else torch.optim.Adam
    decay = LM_TASK.weight_decay if cfg.task == "lm" else 0.0

    def make(model: torch.nn.Module) -> torch.optim.Optimizer:
        if method.spec is None:
            opt = base(model.parameters(), lr=cfg.lr, weight_decay=decay)
        else:
            from ..optimizer import NiNoAdam

            opt = NiNoAdam(model.parameters(), model=model, base=base, lr=cfg.lr, weight_decay=decay,
                           nowcaster=method.spec, period=cfg.period, context=cfg.context, max_steps=cfg.steps,
                           **dict(method.options))
        attach_schedule(opt, cfg.schedule, cfg.steps, cfg.warmup)
        return opt

    return make


def run_one(method: Method, seed: int, cfg: BenchConfig, data=None,
            progress: Callable[[int], None] | None = None, device: str = "cpu") -> dict:
    """Train one run and return its results (not written). ``progress(n)`` is called with steps done.

    ``data``: Fashion-MNIST for the image tasks, a ``TextData`` for lm (loaded when None). ``device``: where
    the model and data live; not part of the protocol (a run's file records it).
    """
    lm = cfg.task == "lm"
    if data is None:
        data = load_kjv() if lm else load_fashion_mnist()
    if not lm and (cfg.train_examples is not None or cfg.test_examples is not None):
        data = data.subset(cfg.train_examples, cfg.test_examples)
    base_rss = _rss_mb()
    caught: list[str] = []
    last = [0]

    def on_eval(step: int, acc: float) -> None:  # forward the steps done to the progress callback
        if progress is not None:
            progress(step - last[0])
        last[0] = step

    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        make = make_optimizer_factory(method, cfg)
        if lm:
            curve = train_lm_steps_to_target(make, data, steps=cfg.steps, eval_every=cfg.eval_every,
                                             thresholds=cfg.thresholds, seed=seed, name=f"{method.name}/{seed}",
                                             on_eval=on_eval, device=device)
        else:
            curve = train_steps_to_target(make, data, steps=cfg.steps, eval_every=cfg.eval_every,
                                          thresholds=cfg.thresholds, seed=seed, model=cfg.task,
                                          batch_size=cfg.batch_size, name=f"{method.name}/{seed}",
                                          order=cfg.order, on_eval=on_eval, device=device)
        caught = sorted({str(w.message) for w in wlist})
    steps_to = {f"{t:g}": first_reached(curve.steps, curve.values, t, cfg.higher_is_better) for t in cfg.thresholds}
    nowcast_mean = sum(curve.nowcast_times) / len(curve.nowcast_times) if curve.nowcast_times else None
    return {
        "schema": SCHEMA, "task": cfg.task, "task_name": LM_TASK.name if lm else TASKS[cfg.task].name,
        "method": method.name, "spec": method.spec, "options": dict(method.options),
        "paper_method": method.paper, "seed": seed,
        "config": cfg.protocol(), "target": cfg.target, "ladder": list(cfg.ladder), "steps_cap": cfg.steps,
        "steps_to": steps_to, "steps_to_target": steps_to[f"{cfg.target:g}"],
        "curve": {"steps": curve.steps, "values": curve.values, "train_loss": curve.train_loss},
        "final_metric": curve.final_value, "best_metric": curve.best_value,
        "metric": "val_perplexity" if lm else "test_accuracy", "higher_is_better": cfg.higher_is_better,
        "finite": curve.finite, "wall_time": curve.wall_time, "train_time": curve.train_time,
        "eval_time": curve.eval_time, "nowcast_steps": curve.nowcast_steps, "nowcast_times": curve.nowcast_times,
        "mean_nowcast_time": nowcast_mean, "nowcast_time_total": sum(curve.nowcast_times),
        "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base_rss, "warnings": caught,
        "device": _device_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_examples": len(data.train) if lm else len(data.train_x),  # bytes for lm
        "test_examples": len(data.val) if lm else len(data.test_x),
    }


@dataclass
class Job:
    method: Method
    seed: int
    cfg: BenchConfig
    path: Path = field(default=None)
    command: str | None = None
    device: str = "cpu"
    fingerprint: str | None = None  # of the method's nowcaster (``nowcaster_fingerprint``)

    def write(self, result: dict) -> None:
        """Add what the parent process knows (command line, nowcaster fingerprint) and write the file."""
        write_json_atomic(self.path, {**result, "command": self.command, "nowcaster_sha256": self.fingerprint})


def _check_existing(path: Path, cfg: BenchConfig, fingerprint: str | None) -> bool:
    """True when ``path`` holds a finished run of the same protocol and nowcaster; raises when either differs
    (files written before fingerprints were recorded are taken as they are)."""
    if not path.is_file():
        return False
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False  # unreadable (cannot happen with atomic writes, but then: run it again)
    # The thresholds need not match (THRESHOLD_KEYS). A schedule is recorded only when it is not constant, so a
    # scheduled file never passes for a constant-rate run.
    recorded, protocol = old.get("config", {}), cfg.protocol()
    keys = set(protocol) | ({"schedule", "warmup"} & set(recorded))
    mismatch = {k: (recorded.get(k), protocol.get(k)) for k in sorted(keys)
                if recorded.get(k) != protocol.get(k) and k not in THRESHOLD_KEYS}
    if mismatch:
        diff = ", ".join(f"{k}: {a} there, {b} now" for k, (a, b) in mismatch.items())
        raise ValueError(f"{path} was run with another protocol ({diff}); use another --out or delete it")
    recorded = old.get("nowcaster_sha256")
    if recorded is not None and recorded != fingerprint:
        raise ValueError(f"{path} was run with other nowcaster weights (fingerprint {recorded} there, {fingerprint} "
                         f"now); use another --out, another method name (NAME=SPEC) or delete it")
    return True


# ---------------------------------------------------------------------------------------------- processes
_QUEUE = None


def _init_worker(queue) -> None:
    global _QUEUE
    _QUEUE = queue
    torch.set_num_threads(1)


def _worker(job: Job) -> tuple[str, str | None]:
    """Run one job in this (fresh) process and write its file; returns (path, error traceback or None)."""
    key = str(job.path)
    try:
        report = (lambda n: _QUEUE.put((key, n))) if _QUEUE is not None else None
        job.write(run_one(job.method, job.seed, job.cfg, progress=report, device=job.device))
        return key, None
    except Exception:
        return key, traceback.format_exc()


def run_benchmark(methods: list[Method], seeds: list[int], cfg: BenchConfig | list[BenchConfig],
                  out: str | os.PathLike, workers: int = 1, progress: bool = True,
                  log: Callable[[str], None] = print, command: str | None = None,
                  device: str = "cpu") -> dict[str, list[str]]:
    """Run every (config, method, seed) whose results file is missing.

    Args:
        cfg: one protocol or one per task.
        workers: parallel processes, each with one torch thread and one run at a time (a fresh process per run);
            0 runs everything in this process (with one torch thread while it runs).
        command: the command line, stored in each results file (the report quotes it).
        device: where each run's model and data live ("cpu", "cuda", ...); several workers may share one GPU.

    Returns:
        ``{"done": [...], "skipped": [...], "failed": [...]}`` (paths).
    """
    cfgs = cfg if isinstance(cfg, list) else [cfg]
    # A bad spec fails here, before any run; a method's options are part of what a results file must match.
    fingerprints = {m.slug: nowcaster_fingerprint(m.spec) + "".join(f";{k}={v!r}" for k, v in m.options)
                    if m.spec is not None else None for m in methods}
    jobs, skipped = [], []
    for c in cfgs:  # seed-major, so that an interrupted benchmark has every method for its first seeds
        for s in seeds:
            for m in methods:
                path = result_path(out, c.task, m, s)
                if _check_existing(path, c, fingerprints[m.slug]):
                    skipped.append(str(path))
                else:
                    jobs.append(Job(m, s, c, path, command, device, fingerprints[m.slug]))
    total = len(jobs) + len(skipped)
    log(f"{total} runs: {len(skipped)} already in {out}, {len(jobs)} to do"
        + (f" ({workers} parallel process{'es' if workers > 1 else ''}, 1 torch thread each)" if jobs else ""))
    done, failed = [], []
    if not jobs:
        return {"done": done, "skipped": skipped, "failed": failed}
    bars = _Bars(total, len(skipped), sum(j.cfg.steps for j in jobs), enabled=progress)
    try:
        if workers <= 0:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                loaded: dict[bool, object] = {}  # the data of each kind, loaded once
                for job in jobs:
                    try:
                        lm = job.cfg.task == "lm"
                        if lm not in loaded:
                            loaded[lm] = load_kjv() if lm else load_fashion_mnist()
                        job.write(run_one(job.method, job.seed, job.cfg, data=loaded[lm], progress=bars.steps,
                                          device=job.device))
                        done.append(str(job.path))
                        bars.run_done(job.path, None, log)
                    except Exception:
                        failed.append(str(job.path))
                        bars.run_done(job.path, traceback.format_exc(), log)
            finally:
                torch.set_num_threads(threads)
        else:
            ctx = mp.get_context("spawn")  # fresh interpreters: no forked OpenMP state, per-run peak RSS
            queue = ctx.Queue()
            with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(queue,),
                          maxtasksperchild=1) as pool:
                pending = pool.imap_unordered(_worker, jobs)
                remaining = len(jobs)
                while remaining:
                    try:
                        key, err = pending.next(timeout=0.5)
                    except mp.TimeoutError:
                        bars.drain(queue)
                        continue
                    bars.drain(queue)
                    remaining -= 1
                    (failed if err else done).append(key)
                    bars.run_done(key, err, log)
    finally:
        bars.close()
    log(f"{len(done)} runs written, {len(skipped)} skipped (already there), {len(failed)} failed")
    return {"done": done, "skipped": skipped, "failed": failed}


class _Bars:
    """A runs bar and a steps bar (tqdm when installed and enabled; otherwise one line per finished run)."""

    def __init__(self, total_runs: int, initial_runs: int, total_steps: int, enabled: bool):
        self.runs = self.step_bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.runs = tqdm(total=total_runs, initial=initial_runs, desc="runs", unit="run", position=0)
                self.step_bar = tqdm(total=total_steps, desc="steps", unit="step", position=1, mininterval=2.0,
                                     smoothing=0.05)

    def steps(self, n: int) -> None:
        if self.step_bar is not None and n > 0:
            self.step_bar.update(n)

    def drain(self, queue) -> None:
        while True:
            try:
                _, n = queue.get_nowait()
            except Exception:  # queue.Empty
                return
            self.steps(n)

    def run_done(self, path, err: str | None, log: Callable[[str], None]) -> None:
        msg = f"{'FAILED' if err else 'done'}: {path}" + (f"\n{err}" if err else "")
        if self.runs is not None:
            self.runs.update(1)
            self.runs.write(msg)
        else:
            log(msg)

    def close(self) -> None:
        for bar in (self.step_bar, self.runs):
            if bar is not None:
                bar.close()

"""``nino-optim report``: markdown tables and a PNG of the curves from the results files of ``nino-optim bench``.

Per task, one row per method: the steps to the target for each seed, their median and its reduction vs Adam's
median, the paper's Table 2 reduction beside it, the mean steps to each lower threshold of the ladder and its
reduction, the median final test accuracy, wall time, mean nowcast-step time, nowcast overhead and peak RSS.

A run that never reaches a threshold is shown as ``>CAP`` (CAP = its number of steps, 10,000 in the paper's
protocol) and counted as CAP. Medians and means that include such a run are lower bounds (``≥``) on the true
value; a reduction computed from a lower bound of Adam's steps is a lower bound (``≥``) on the true reduction, one
computed from a lower bound of the method's own steps an upper bound (``≤``), and with both it is unknown (``?``).
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from .runner import PAPER_TABLE2, THRESHOLD_KEYS
from .steps_to_target import first_reached

PAPER_LABELS = {"linefit": "Linefit", "linefit+": "Linefit+", "wnn+": "WNN+", "nino": "NiNo"}


@dataclass(frozen=True)
class Bound:
    """A number that is exact, or a lower bound (``lower``) or upper bound (``upper``) on the true value."""

    value: float
    lower: bool = False
    upper: bool = False

    @property
    def exact(self) -> bool:
        return not (self.lower or self.upper)

    def fmt(self, digits: int = 0, cap: int | None = None, suffix: str = "") -> str:
        if self.lower and cap is not None and self.value >= cap:
            return f">{cap}"
        text = f"{self.value:.{digits}f}{suffix}"
        return ("≥" if self.lower else "≤" if self.upper else "") + text


def load_results(runs: str | os.PathLike) -> list[dict]:
    """Every results file under ``runs`` (recursively), sorted by task, method and seed."""
    out = []
    for path in sorted(Path(runs).rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "schema" in data and "steps_to" in data:
            data["_path"] = str(path)
            out.append(data)
    return sorted(out, key=lambda r: (r["task"], r["method"], r["seed"]))


def curve_values(result: dict) -> list[float]:
    """The evaluated metric of a run (results files before the LM task called it ``accuracy``)."""
    curve = result["curve"]
    return curve["values"] if "values" in curve else curve["accuracy"]


def steps_to(result: dict, threshold: float) -> tuple[int, bool]:
    """(steps, censored): the first evaluated step reaching ``threshold``, or (cap, True) when never reached."""
    key = f"{threshold:g}"
    if key in result.get("steps_to", {}):
        s = result["steps_to"][key]
    else:
        s = first_reached(result["curve"]["steps"], curve_values(result), threshold,
                          result.get("higher_is_better", True))
    return (int(result["steps_cap"]), True) if s is None else (int(s), False)


def median_bound(values: list[tuple[float, bool]]) -> Bound:
    """Median of (value, censored) pairs, censored values counted as given (they are the largest)."""
    if not values:
        return Bound(float("nan"))
    ordered = sorted(values, key=lambda v: (v[0], v[1]))
    n = len(ordered)
    mid = ordered[(n - 1) // 2: n // 2 + 1]
    return Bound(sum(v for v, _ in mid) / len(mid), lower=any(c for _, c in mid))


def mean_bound(values: list[tuple[float, bool]]) -> Bound:
    """Mean of (value, censored) pairs: a lower bound when any is censored."""
    if not values:
        return Bound(float("nan"))
    return Bound(sum(v for v, _ in values) / len(values), lower=any(c for _, c in values))


def reduction_bound(method: Bound, adam: Bound) -> Bound | None:
    """Percent fewer steps than Adam (positive: faster), with its bound; None when unknown."""
    if adam.value != adam.value or method.value != method.value or adam.value == 0:
        return None
    if adam.lower and method.lower:
        return Bound(100.0 * (adam.value - method.value) / adam.value, lower=True, upper=True)  # unknown
    return Bound(100.0 * (adam.value - method.value) / adam.value, lower=adam.lower, upper=method.lower)


def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else None


def summarize(results: list[dict], thresholds: dict[str, tuple[float, list[float]]] | None = None
              ) -> dict[str, dict]:
    """Numbers behind the tables: ``{task: {"methods": {name: {...}}, "seeds": [...], ...}}``.

    ``thresholds``: ``{task: (target, ladder)}`` read from the curves instead of the ones the runs recorded (a
    scheduled baseline's targets are known only once it has run).
    """
    tasks: dict[str, dict] = {}
    for r in results:
        t = tasks.setdefault(r["task"], {"task_name": r.get("task_name", r["task"]), "runs": {}})
        t["runs"].setdefault(r["method"], []).append(r)
    summary = {}
    for task, t in tasks.items():
        all_runs = [r for rs in t["runs"].values() for r in rs]
        target, ladder = (thresholds or {}).get(task, (all_runs[0]["target"],
                                                       {x for r in all_runs for x in r.get("ladder", [])}))
        ladder = sorted(ladder, reverse=not all_runs[0].get("higher_is_better", True))  # easiest threshold first
        cap = max(int(r["steps_cap"]) for r in all_runs)
        configs = {json.dumps({k: v for k, v in r.get("config", {}).items() if k not in THRESHOLD_KEYS},
                              sort_keys=True) for r in all_runs}
        methods = {}
        for name, runs in t["runs"].items():
            runs = sorted(runs, key=lambda r: r["seed"])
            per_seed = {r["seed"]: steps_to(r, target) for r in runs}
            wall = [r.get("wall_time") for r in runs]
            nowcast = [r.get("mean_nowcast_time") for r in runs]
            overhead = [100.0 * r["nowcast_time_total"] / r["train_time"]
                        if r.get("nowcast_steps") and r.get("train_time") else None for r in runs]
            methods[name] = {
                "paper_method": runs[0].get("paper_method"),
                "spec": runs[0].get("spec"),
                "fingerprints": sorted({r["nowcaster_sha256"] for r in runs if r.get("nowcaster_sha256")}),
                "per_seed": per_seed,
                "reached": sum(not c for _, c in per_seed.values()),
                "median": median_bound(list(per_seed.values())),
                "ladder": {x: mean_bound([steps_to(r, x) for r in runs]) for x in ladder},
                "final_metric": _median([r.get("final_metric") for r in runs]),
                "wall_time": _median(wall),
                "mean_nowcast_time": _median(nowcast) if any(n is not None for n in nowcast) else None,
                "overhead_pct": _median(overhead) if any(o is not None for o in overhead) else None,
                "peak_rss_mb": _median([r.get("peak_rss_mb") for r in runs]),
                "finite": all(r.get("finite", True) for r in runs),
            }
        adam = methods.get("adam")
        constant = all_runs[0].get("config", {}).get("schedule", "constant") == "constant"  # the paper's protocol
        for name, m in methods.items():
            if adam is None or name == "adam":
                m["reduction"], m["ladder_reduction"] = None, {x: None for x in ladder}
            else:
                m["reduction"] = reduction_bound(m["median"], adam["median"])
                m["ladder_reduction"] = {x: reduction_bound(m["ladder"][x], adam["ladder"][x]) for x in ladder}
            m["paper_reduction"] = PAPER_TABLE2.get(task, {}).get(m["paper_method"]) \
                if name != "adam" and constant else None
        order = sorted(methods, key=lambda n: (n != "adam", _METHOD_ORDER.get(methods[n]["paper_method"], 9), n))
        summary[task] = {"task_name": t["task_name"], "target": target, "ladder": ladder, "steps_cap": cap,
                         "higher_is_better": all_runs[0].get("higher_is_better", True),
                         "seeds": sorted({r["seed"] for r in all_runs}), "order": order, "methods": methods,
                         "mixed_protocols": len(configs) > 1, "config": all_runs[0].get("config", {}),
                         "runs": len(all_runs), "torch": all_runs[0].get("torch"),
                         "threads": sorted({r.get("threads") for r in all_runs if r.get("threads") is not None}),
                         "devices": sorted({r.get("device", "cpu") for r in all_runs})}
    return dict(sorted(summary.items()))


_METHOD_ORDER = {"linefit": 1, "linefit+": 2, "wnn+": 3, "nino": 4}


def _pct(x: float) -> str:
    return f"{100 * x:g}%"


def _threshold(s: dict, x: float) -> str:
    """A threshold as the table shows it: a test accuracy in %, or a validation perplexity."""
    return _pct(x) if s["higher_is_better"] else f"ppl {x:g}"


def _metric_value(s: dict, x: float) -> str:
    return f"{100 * x:.2f}%" if s["higher_is_better"] else f"{x:.3f}"


def _metric_name(s: dict) -> str:
    return "test accuracy" if s["higher_is_better"] else "validation perplexity"


def _red(b: Bound | None) -> str:
    if b is None:
        return "—"
    if b.lower and b.upper:
        return "?"
    return b.fmt(1)


def _fmt_time(sec: float | None) -> str:
    if sec is None:
        return "—"
    return f"{sec / 60:.1f} min" if sec >= 120 else f"{sec:.1f} s"


def task_table(task: str, s: dict) -> str:
    """The markdown table of one task."""
    seeds, ladder, cap = s["seeds"], s["ladder"], s["steps_cap"]
    head = (["method"] + [f"seed {x}" for x in seeds] + ["reached", "median", "reduction %", "paper Table 2 %"]
            + [h for x in ladder for h in (f"mean to {_threshold(s, x)}", "reduction %")]
            + [f"final {'acc' if s['higher_is_better'] else 'ppl'} (median)", "wall time", "nowcast step",
               "nowcast overhead", "peak RSS"])
    rows = []
    for name in s["order"]:
        m = s["methods"][name]
        cells = [f"`{name}`"]
        for seed in seeds:
            if seed in m["per_seed"]:
                v, c = m["per_seed"][seed]
                cells.append(f">{v}" if c else str(v))
            else:
                cells.append("—")
        cells += [f"{m['reached']}/{len(m['per_seed'])}", m["median"].fmt(0, cap), _red(m["reduction"]),
                  "—" if m["paper_reduction"] is None else f"{m['paper_reduction']:.1f}"]
        for x in ladder:
            cells += [m["ladder"][x].fmt(0, cap), _red(m["ladder_reduction"][x])]
        cells += ["—" if m["final_metric"] is None else _metric_value(s, m["final_metric"]),
                  _fmt_time(m["wall_time"]),
                  "—" if m["mean_nowcast_time"] is None else f"{1000 * m['mean_nowcast_time']:.0f} ms",
                  "—" if m["overhead_pct"] is None else f"{m['overhead_pct']:.2f}%",
                  "—" if m["peak_rss_mb"] is None else f"{m['peak_rss_mb']:.0f} MiB"]
        if not m["finite"]:
            cells[0] += " (non-finite loss)"
        rows.append(cells)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(summary: dict[str, dict], png_name: str | None = "curves.png",
             command: str | list[str] | None = None) -> str:
    """The whole report: the commands, a header per task with its protocol, the table, the legend, the PNG."""
    parts = ["# Steps to target: Adam vs nowcasters", ""]
    commands = [command] if isinstance(command, str) else list(command or [])
    if commands:
        parts += ["Produced by:", "", "```"] + commands + ["```", ""]
    for task, s in summary.items():
        c = s["config"]
        base = "Adam lr {}, no weight decay".format(c.get("lr")) if s["higher_is_better"] else \
            "AdamW lr {}, weight decay {}".format(c.get("lr"), c.get("weight_decay"))
        if c.get("schedule", "constant") != "constant":
            base = base.replace(" lr ", " peak lr ") + (f", {c['schedule']} schedule with "
                                                        f"{100 * c.get('warmup', 0):g}% linear warmup")
        parts += [f"## {s['task_name']} — target {_threshold(s, s['target'])} {_metric_name(s)}", "",
                  f"{s['runs']} runs, seeds {', '.join(map(str, s['seeds']))}; {c.get('steps')} steps, batch "
                  f"{c.get('batch_size')}, {base}, nowcast period {c.get('period')}, "
                  f"context {c.get('context')}, {_metric_name(s)} every {c.get('eval_every')} steps"
                  + (f", batch order `{c.get('order')}`" if s["higher_is_better"] else "")
                  + (f", {c.get('train_examples')} training images" if c.get("train_examples") else "")
                  + (f", {c.get('test_examples')} test images" if c.get("test_examples") else "")
                  + f"; run on {', '.join(s['devices'])}, torch {s['torch']}, torch threads per run "
                  f"{', '.join(map(str, s['threads']))}.", ""]
        if s["mixed_protocols"]:
            parts += ["**Warning: these runs do not all share one protocol (see their `config`).**", ""]
        parts += [task_table(task, s), ""]
        printed = {n: m["fingerprints"] for n, m in s["methods"].items() if m["fingerprints"]}
        if printed:
            parts += ["Nowcaster fingerprints (`nowcaster_sha256` of the results files): " + ", ".join(
                f"`{n}` {' / '.join(f)}" for n, f in printed.items()) + ".", ""]
        mixed = [n for n, f in printed.items() if len(f) > 1]
        if mixed:
            parts += [f"**Warning: the runs of {', '.join(f'`{n}`' for n in mixed)} used different weights.**", ""]
    parts += [
        "Steps are the first evaluation at or past the threshold (test accuracy at or above it, perplexity at or "
        "below it; rounded up to the evaluation interval). "
        "`>N`: never reached within the N steps of the run, counted as N, so a median or mean that includes such a "
        "run is a lower bound (`≥`). Reduction % = 100 × (Adam − method) / Adam, positive = fewer steps, from the "
        "medians (target) or the means (ladder); `≥`: a lower bound (Adam did not reach it in some run), `≤`: an "
        "upper bound (the method did not), `?`: both. Paper Table 2: the reduction reported in the paper "
        "(Knyazev et al., ICLR 2025) for the same task. Wall time: the median run, evaluations included. Nowcast "
        "step: mean duration of one nowcast `step()` call (the first includes building the neural graph); "
        "nowcast overhead: total nowcast time as % of training time (evaluation excluded). Peak RSS: the run's "
        "process (one run per process; it includes the Python interpreter, torch and the dataset).", ""]
    if png_name:
        parts += [f"![metric vs step]({png_name})", ""]
    return "\n".join(parts)


def plot(results: list[dict], summary: dict[str, dict], path: str | os.PathLike, per_seed: bool = True) -> Path:
    """The metric vs step, one panel per task: per-seed thin lines and the median over seeds, thresholds dashed,
    nowcasts dotted. The y axis is zoomed on the thresholds (accuracy: from 6 points below the lowest;
    perplexity: up to twice the highest)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(6.5 * max(1, len(tasks)), 4.8), dpi=110,
                             squeeze=False)
    names = sorted({n for s in summary.values() for n in s["order"]},
                   key=lambda n: (n != "adam", n))
    colors = {n: ("black" if n == "adam" else f"C{i}") for i, n in enumerate(names)}
    for ax, task in zip(axes[0], tasks):
        s = summary[task]
        scale = 100.0 if s["higher_is_better"] else 1.0
        best = 0.0
        for name in s["order"]:
            runs = [r for r in results if r["task"] == task and r["method"] == name]
            curves = [(r["curve"]["steps"], [scale * a for a in curve_values(r)]) for r in runs]
            if per_seed:
                for xs, ys in curves:
                    ax.plot(xs, ys, color=colors[name], lw=0.6, alpha=0.35)
            common = sorted(set.intersection(*[set(xs) for xs, _ in curves])) if curves else []
            if common:
                lookup = [dict(zip(xs, ys)) for xs, ys in curves]
                med = [statistics.median(d[x] for d in lookup) for x in common]
                ax.plot(common, med, color=colors[name], lw=1.8 if name == "adam" else 1.4,
                        label=f"{name} (median of {len(curves)})")
                best = max(best, max(med))
            best = max([best] + [max(ys) for _, ys in curves if ys])
        for x in s["ladder"] + [s["target"]]:
            ax.axhline(scale * x, color="tab:red", ls="--", lw=0.7, alpha=0.6)
        for step in sorted({n for r in results if r["task"] == task for n in r.get("nowcast_steps", [])}):
            ax.axvline(step, color="grey", ls=":", lw=0.7, alpha=0.7)
        thresholds = s["ladder"] + [s["target"]]
        if s["higher_is_better"]:
            ax.set_ylim(100 * min(thresholds) - 6, max(best, 100 * s["target"]) + 0.8)
            ax.set_ylabel("test accuracy (%)")
        else:
            ax.set_ylim(0.95 * s["target"], 2 * max(thresholds))
            ax.set_ylabel("validation perplexity")
        ax.set_xlim(0, s["steps_cap"])
        ax.set_title(f"{s['task_name']} (target {_threshold(s, s['target'])}; dashed: target and ladder; "
                     "dotted: nowcasts)", fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if s["higher_is_better"] else "upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(runs: str | os.PathLike, out: str | os.PathLike, command: str | None = None,
                 report_command: str | None = None, per_seed: bool = True,
                 thresholds: dict[str, tuple[float, list[float]]] | None = None) -> tuple[Path, Path | None, str]:
    """Write ``<out>/README.md`` (the tables) and ``<out>/curves.png``; returns (md path, png path, markdown).

    The report quotes ``command`` or else the distinct bench commands stored in the results files, then
    ``report_command``; ``thresholds`` as for ``summarize``.
    """
    results = load_results(runs)
    if not results:
        raise FileNotFoundError(f"no results files under {runs}; run `nino-optim bench` first")
    summary = summarize(results, thresholds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        png = plot(results, summary, out / "curves.png", per_seed=per_seed)
    except ImportError:  # matplotlib missing: tables only
        png = None
    commands = [command] if command else sorted({r["command"] for r in results if r.get("command")})
    text = markdown(summary, png.name if png else None, commands + ([report_command] if report_command else []))
    md = out / "README.md"
    md.write_text(text)
    return md, png, text

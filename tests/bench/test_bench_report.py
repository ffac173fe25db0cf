"""``nino-optim report``: table numbers from hand-made results files (no training, no dataset needed)."""
import json
import math

import pytest

from nino_optim.bench.report import (Bound, load_results, mean_bound, median_bound, reduction_bound, steps_to,
                                     summarize, write_report)
from nino_optim.bench.runner import write_json_atomic
from nino_optim.bench.steps_to_target import first_reached
from nino_optim.cli import main

TARGET, LADDER, CAP = 0.895, [0.885, 0.89], 10_000


def fake(method, seed, to_target, to_890, to_885, *, paper=None, final=0.89, wall=600.0, train=200.0,
         nowcast=None, rss=500.0, task="fm16"):
    """A results file as `bench` writes it (only the fields the report reads)."""
    steps = [0, 2500, 5000, 7500, 10_000]
    nowcast = nowcast or []
    return {"schema": 1, "task": task, "task_name": "FM-16", "method": method, "spec": None, "paper_method": paper,
            "seed": seed, "config": {"steps": CAP, "eval_every": 25, "batch_size": 128, "lr": 6e-3, "period": 1000,
                                     "context": 5, "order": "dataloader"},
            "target": TARGET, "ladder": LADDER, "steps_cap": CAP,
            "steps_to": {"0.885": to_885, "0.89": to_890, "0.895": to_target}, "steps_to_target": to_target,
            "curve": {"steps": steps, "accuracy": [0.1, 0.85, 0.88, 0.885 + seed * 1e-6, final],
                      "train_loss": [None, 0.5, 0.4, 0.3, 0.3]},
            "final_metric": final, "finite": True, "wall_time": wall, "train_time": train,
            "nowcast_steps": [1000 * (i + 1) for i in range(len(nowcast))], "nowcast_times": nowcast,
            "mean_nowcast_time": sum(nowcast) / len(nowcast) if nowcast else None,
            "nowcast_time_total": sum(nowcast), "peak_rss_mb": rss, "threads": 1, "torch": "2.x"}


# Adam reaches 89.5% in 1 of 3 seeds (the reference run); NiNo in 3 of 3; WNN+ in 2 of 3; Linefit+ in 1 of 3
# and misses 88.5% once while Adam always reaches it.
RUNS = [
    fake("adam", 1000, 9825, 7500, 6000, final=0.896, wall=500.0),
    fake("adam", 2000, None, 8000, 7000, final=0.8909, wall=700.0),
    fake("adam", 3000, None, 9050, 7400, final=0.8915, wall=600.0),
    fake("nino", 1000, 5625, 4000, 3000, paper="nino", final=0.90, nowcast=[0.5, 0.1, 0.3], train=100.0),
    fake("nino", 2000, 5675, 4500, 3500, paper="nino", final=0.899, nowcast=[0.3, 0.3], train=100.0),
    fake("nino", 3000, 8250, 5000, 3976, paper="nino", final=0.897, nowcast=[0.4], train=200.0),
    fake("wnn+", 1000, 5800, 6000, 5000, paper="wnn+"),
    fake("wnn+", 2000, 7125, 6500, 4800, paper="wnn+"),
    fake("wnn+", 3000, None, 6750, 5000, paper="wnn+"),
    fake("linefit+", 1000, None, 9000, 6000, paper="linefit+"),
    fake("linefit+", 2000, None, None, None, paper="linefit+"),
    fake("linefit+", 3000, 9000, 8000, 6000, paper="linefit+"),
]


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    for r in RUNS:
        write_json_atomic(root / r["task"] / f"{r['method']}__seed{r['seed']}.json", r)
    (root / "fm16" / "notes.json").write_text(json.dumps({"unrelated": True}))  # not a results file: ignored
    return root


def test_first_reached_and_not_reached():
    steps, acc = [0, 25, 50, 75], [0.1, 0.8949, 0.895, 0.9]
    assert first_reached(steps, acc, 0.895) == 50  # at or above, exactly at the threshold counts
    assert first_reached(steps, acc, 0.85) == 25
    assert first_reached(steps, acc, 0.95) is None
    assert first_reached([], [], 0.5) is None
    r = fake("adam", 1, None, 7000, 6000)
    assert steps_to(r, TARGET) == (CAP, True) and steps_to(r, 0.89) == (7000, False)
    del r["steps_to"]["0.885"]  # a threshold not stored is read from the curve
    assert steps_to(r, 0.885) == (7500, False) and steps_to(r, 0.99) == (CAP, True)


def test_median_mean_and_reduction_bounds():
    assert median_bound([(5, False), (1, False), (CAP, True)]) == Bound(5)  # the censored run is only the largest
    assert median_bound([(1, False), (CAP, True), (CAP, True)]) == Bound(CAP, lower=True)
    assert median_bound([(1, False), (3, False), (5, False), (CAP, True)]) == Bound(4)
    assert median_bound([(1, False), (3, False), (CAP, True), (CAP, True)]) == Bound((3 + CAP) / 2, lower=True)
    assert mean_bound([(1, False), (3, False)]) == Bound(2) and mean_bound([(1, False), (CAP, True)]).lower
    assert reduction_bound(Bound(5000), Bound(10000)) == Bound(50.0)
    assert reduction_bound(Bound(5000), Bound(CAP, lower=True)) == Bound(50.0, lower=True)  # >= 50%
    assert reduction_bound(Bound(CAP, lower=True), Bound(8000)) == Bound(-25.0, upper=True)  # <= -25%
    r = reduction_bound(Bound(CAP, lower=True), Bound(CAP, lower=True))
    assert r.lower and r.upper  # unknown
    assert Bound(CAP, lower=True).fmt(0, CAP) == ">10000" and Bound(43.25, lower=True).fmt(1) == "≥43.2"


def test_summary_numbers(runs_dir):
    s = summarize(load_results(runs_dir))["fm16"]
    assert s["order"] == ["adam", "linefit+", "wnn+", "nino"] and s["seeds"] == [1000, 2000, 3000]
    assert s["target"] == TARGET and s["ladder"] == LADDER and s["steps_cap"] == CAP and not s["mixed_protocols"]
    m = s["methods"]
    adam, nino, wnn, lf = m["adam"], m["nino"], m["wnn+"], m["linefit+"]
    assert adam["per_seed"] == {1000: (9825, False), 2000: (CAP, True), 3000: (CAP, True)} and adam["reached"] == 1
    assert adam["median"] == Bound(CAP, lower=True) and adam["reduction"] is None
    assert nino["median"] == Bound(5675) and nino["reached"] == 3
    assert nino["reduction"] == Bound(100 * (CAP - 5675) / CAP, lower=True)  # >= 43.25: Adam's median is a bound
    assert wnn["median"] == Bound(7125) and wnn["reached"] == 2
    assert wnn["reduction"] == Bound(28.75, lower=True)
    assert lf["median"] == Bound(CAP, lower=True) and lf["reduction"].lower and lf["reduction"].upper  # unknown
    # ladder: means (the reference figures: Adam 8,183 to 89.0%, NiNo 4,500, -45%)
    assert adam["ladder"][0.89] == Bound(24550 / 3) and nino["ladder"][0.89] == Bound(4500)
    assert math.isclose(nino["ladder_reduction"][0.89].value, 100 * (24550 / 3 - 4500) / (24550 / 3))
    assert nino["ladder_reduction"][0.89].exact
    assert adam["ladder"][0.885] == Bound(6800) and nino["ladder"][0.885] == Bound(10476 / 3)
    assert lf["ladder"][0.885] == Bound((6000 + CAP + 6000) / 3, lower=True)
    assert lf["ladder_reduction"][0.885] == Bound(100 * (6800 - 22000 / 3) / 6800, upper=True)  # <= : linefit+ missed
    # paper figures, medians of the rest
    assert (nino["paper_reduction"], wnn["paper_reduction"], lf["paper_reduction"], adam["paper_reduction"]) == \
        (46.8, 33.8, 27.3, None)
    assert adam["final_metric"] == 0.8915 and adam["wall_time"] == 600.0
    assert adam["mean_nowcast_time"] is None and adam["overhead_pct"] is None
    assert math.isclose(nino["mean_nowcast_time"], 0.3)  # median of the runs' means 0.3, 0.3, 0.4
    assert math.isclose(nino["overhead_pct"], 0.6)  # median of 0.9/100, 0.6/100, 0.4/200 in %


def test_report_writes_table_and_png(runs_dir, tmp_path, capsys):
    out = tmp_path / "docs"
    main(["report", "--runs", str(runs_dir), "--out", str(out), "--command-line", "nino-optim bench --task fm16"])
    text = (out / "README.md").read_text()
    assert "nino-optim bench --task fm16" in text and "![metric vs step](curves.png)" in text
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ") for line in text.splitlines()
            if line.startswith("| `")}
    assert rows["adam"][1:6] == ["9825", ">10000", ">10000", "1/3", ">10000"]
    assert rows["nino"][1:8] == ["5625", "5675", "8250", "3/3", "5675", "≥43.2", "46.8"]
    assert rows["wnn+"][3:8] == [">10000", "2/3", "7125", "≥28.8", "33.8"]
    assert rows["linefit+"][5:7] == [">10000", "?"]
    assert rows["nino"][8:12] == ["3492", "48.6", "4500", "45.0"]  # mean to 88.5% / 89.0% and reductions
    assert rows["linefit+"][8:10] == ["≥7333", "≤-7.8"]
    assert rows["nino"][12] == "89.90%" and rows["nino"][14] == "300 ms" and rows["nino"][15] == "0.60%"
    png = out / "curves.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "written:" in capsys.readouterr().out


def test_report_names_the_weights_and_warns_when_a_method_mixed_them(tmp_path):
    def report(runs, name):
        for r in runs:
            write_json_atomic(tmp_path / name / r["task"] / f"{r['method']}__seed{r['seed']}.json", r)
        return write_report(tmp_path / name, tmp_path / f"{name}_docs")[2]

    runs = [dict(r, nowcaster_sha256="aaaa") if r["method"] == "nino" else r for r in RUNS]
    text = report(runs, "same")
    assert "`nino` aaaa." in text and "different weights" not in text
    runs[3] = dict(runs[3], nowcaster_sha256="bbbb")
    text = report(runs, "mixed")
    assert "`nino` aaaa / bbbb" in text and "the runs of `nino` used different weights" in text


def test_report_without_results(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(SystemExit, match="no results files"):
        main(["report", "--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])


def test_lm_results_are_reported_as_perplexities(tmp_path):
    """Lower is better: the steps to a perplexity come from the curve when not stored, thresholds print as ppl."""
    def lm(method, seed, values):
        r = fake(method, seed, None, None, None, task="lm", final=values[-1])
        r.update(task_name="LM-KJV", target=4.0, ladder=[6.0, 5.0], steps_to={}, higher_is_better=False,
                 metric="val_perplexity")
        r["config"].update(lr=3e-3, weight_decay=0.01, batch_size=32)
        r["curve"] = {"steps": [0, 2500, 5000, 7500, 10_000], "values": values, "train_loss": [None] * 5}
        return r

    root = tmp_path / "runs"
    for r in (lm("adam", 1, [256, 7, 5.5, 4.5, 3.9]), lm("nino", 1, [256, 5.8, 4.8, 3.95, 3.8])):
        write_json_atomic(root / "lm" / f"{r['method']}__seed1.json", r)
    assert steps_to(load_results(root)[0], 5.0) == (7500, False)
    s = summarize(load_results(root))["lm"]
    assert s["ladder"] == [6.0, 5.0] and s["methods"]["adam"]["median"] == Bound(10_000)
    assert s["methods"]["nino"]["median"] == Bound(7500) and s["methods"]["nino"]["ladder"][6.0] == Bound(2500)
    assert s["methods"]["nino"]["reduction"] == Bound(25.0)
    assert s["methods"]["nino"]["ladder_reduction"][5.0] == Bound(100 * (7500 - 5000) / 7500)
    md, png, text = write_report(root, tmp_path / "docs")
    assert "target ppl 4 validation perplexity" in text and "mean to ppl 6" in text and "AdamW lr 0.003" in text
    assert "| 3.900 |" in text and png.stat().st_size > 0


def test_thresholds_set_by_the_report_are_read_from_the_curves():
    results = [fake("adam", 1000, 9825, 7500, 6000), fake("nino", 1000, 5625, 4000, 3000, paper="nino")]
    s = summarize(results, {"fm16": (0.88, [0.85])})["fm16"]
    assert (s["target"], s["ladder"]) == (0.88, [0.85])
    # the curves (0.1, 0.85, 0.88, ...) at steps 0, 2500, 5000: 0.85 first at 2500, 0.88 first at 5000
    assert s["methods"]["adam"]["per_seed"][1000] == (5000, False)
    assert s["methods"]["adam"]["ladder"][0.85].value == 2500
    assert not s["mixed_protocols"]
    results[1]["config"] = dict(results[1]["config"], target=0.9, ladder=[0.8])  # other thresholds: one protocol
    assert not summarize(results, {"fm16": (0.88, [0.85])})["fm16"]["mixed_protocols"]
    results[1]["config"]["lr"] = 1e-3  # another training run: mixed
    assert summarize(results, {"fm16": (0.88, [0.85])})["fm16"]["mixed_protocols"]


def test_scheduled_runs_get_no_paper_column():
    results = [fake("adam", 1000, 9825, 7500, 6000), fake("nino", 1000, 5625, 4000, 3000, paper="nino")]
    assert summarize(results)["fm16"]["methods"]["nino"]["paper_reduction"] == 46.8
    for r in results:
        r["config"]["schedule"], r["config"]["warmup"] = "cosine", 0.05
    assert summarize(results)["fm16"]["methods"]["nino"]["paper_reduction"] is None  # the paper's rate is constant

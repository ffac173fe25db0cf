"""``nino-optim bench`` on tiny settings: results files, resume, same seed = same start and batches."""
import json
import os

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import kjv, needs_fashion_mnist, needs_kjv
from nino_optim.bench.runner import (BenchConfig, Method, nowcaster_fingerprint, official_dir, parse_method,
                                     parse_methods, result_path, run_benchmark)
from nino_optim.bench.steps_to_target import _dataloader_batches
from nino_optim.cli import main

needs_data = needs_fashion_mnist


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = dict(steps=20, eval_every=5, period=10, train_examples=1024, test_examples=300, target=0.6,
            ladder=(0.3, 0.5))


def test_parse_methods(tmp_path):
    assert parse_method("adam") == Method("adam", None, None)
    assert parse_method("Linefit+") == Method("linefit+", "linefit+", "linefit+")
    assert parse_method("mine=linefit") == Method("mine", "linefit", "linefit")
    ckpt = tmp_path / "nino_no_posw.pt"
    assert parse_method(str(ckpt)) == Method("nino_no_posw", str(ckpt), "nino")  # named after the file
    assert parse_method("x=/a/b/nino_mlp.pt").paper == "wnn+"
    assert parse_method("owner/repo").slug == "owner_repo"
    assert [m.name for m in parse_methods("adam, linefit ,linefit+")] == ["adam", "linefit", "linefit+"]
    with pytest.raises(ValueError, match="named twice"):
        parse_methods("linefit+,linefit+")


def test_official_methods_come_from_the_reference_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("NINO_REFERENCE_DIR", raising=False)
    assert official_dir() is None
    with pytest.raises(ValueError, match=r"NINO_REFERENCE_DIR is not set.*or pass nino=PATH"):
        parse_method("nino")
    monkeypatch.setenv("NINO_REFERENCE_DIR", str(tmp_path))
    assert official_dir() == tmp_path / "upstream-checkpoints"
    with pytest.raises(ValueError, match="not in .*upstream-checkpoints.*set NINO_REFERENCE_DIR"):
        parse_method("wnn+")
    (tmp_path / "upstream-checkpoints").mkdir()
    (tmp_path / "upstream-checkpoints" / "nino_no_posw.pt").touch()
    method = parse_method("nino")
    assert method == Method("nino", str(tmp_path / "upstream-checkpoints" / "nino_no_posw.pt"), "nino")


def test_config_defaults():
    c = BenchConfig("FM-32")
    assert (c.task, c.lr, c.target, c.ladder, c.steps, c.eval_every, c.period, c.context, c.order) == \
        ("fm32", 6e-3, 0.905, (0.895, 0.9), 10_000, 25, 1000, 5, "dataloader")
    assert BenchConfig("fm16").thresholds == [0.885, 0.89, 0.895]
    with pytest.raises(ValueError):
        BenchConfig("c10")
    lm = BenchConfig("lm")
    assert (lm.batch_size, lm.higher_is_better, BenchConfig("fm16").batch_size) == (32, False, 128)
    assert lm.thresholds == sorted(lm.ladder + (lm.target,)) and lm.target < min(lm.ladder)
    assert lm.protocol()["model"].startswith("TinyGPT") and "model" not in BenchConfig("fm16").protocol()


def test_dataloader_order_is_the_official_loops():
    """Epoch e is a shuffled DataLoader whose generator was seeded with seed + e; the last batch is kept."""
    n, bs, seed = 300, 128, 1000
    batches = _dataloader_batches(n, bs, seed)
    got = [next(batches) for _ in range(6)]  # 3 batches per epoch (128, 128, 44)
    for epoch in range(2):
        g = torch.Generator()
        loader = DataLoader(range(n), batch_size=bs, shuffle=True, generator=g)
        g.manual_seed(seed + epoch)
        for a, b in zip(got[3 * epoch: 3 * epoch + 3], loader):
            assert torch.equal(a, b)
    assert [len(b) for b in got] == [128, 128, 44] * 2
    assert sorted(torch.cat(got[:3]).tolist()) == list(range(n))
    assert not torch.equal(got[0], got[3])


@needs_data
def test_results_written_skipped_and_resumed(tmp_path):
    out = tmp_path / "bench"
    cfg = BenchConfig("fm16", **TINY)
    methods = parse_methods("adam,linefit+")
    threads = torch.get_num_threads()
    res = run_benchmark(methods, [7], cfg, out, workers=0, progress=False, log=lambda m: None)
    assert torch.get_num_threads() == threads  # restored after the in-process runs
    assert sorted(os.path.basename(p) for p in res["done"]) == ["adam__seed7.json", "linefit+__seed7.json"]
    assert not res["skipped"] and not res["failed"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left
    adam = json.loads(result_path(out, "fm16", methods[0], 7).read_text())
    lf = json.loads(result_path(out, "fm16", methods[1], 7).read_text())
    assert adam["curve"]["steps"] == [0, 5, 10, 15, 20] and adam["curve"]["train_loss"][0] is None
    assert adam["threads"] == 1 and adam["config"]["order"] == "dataloader" and adam["steps_cap"] == 20
    assert set(adam["steps_to"]) == {"0.3", "0.5", "0.6"} and adam["steps_to_target"] == adam["steps_to"]["0.6"]
    assert adam["nowcast_steps"] == [] and adam["mean_nowcast_time"] is None and adam["spec"] is None
    # step 20 is the run's last (max_steps): a base step, not a nowcast (NiNoAdam's final_nowcast=False)
    assert lf["nowcast_steps"] == [10] and len(lf["nowcast_times"]) == 1 and lf["mean_nowcast_time"] > 0
    assert lf["paper_method"] == "linefit+" and lf["peak_rss_mb"] > 0 and lf["wall_time"] > 0
    assert adam["nowcaster_sha256"] is None and lf["nowcaster_sha256"] == nowcaster_fingerprint("linefit+")
    # same seed: same initialisation and batches, so identical until the first nowcast (step 10)
    assert adam["curve"]["values"][:2] == lf["curve"]["values"][:2]
    assert adam["curve"]["train_loss"][1] == lf["curve"]["train_loss"][1]

    # resume: everything present is skipped and left untouched; a missing file is run again
    stamp = result_path(out, "fm16", methods[0], 7).stat().st_mtime_ns
    res = run_benchmark(methods, [7], cfg, out, workers=0, progress=False, log=lambda m: None)
    assert not res["done"] and len(res["skipped"]) == 2
    assert result_path(out, "fm16", methods[0], 7).stat().st_mtime_ns == stamp
    result_path(out, "fm16", methods[1], 7).unlink()
    res = run_benchmark(methods, [7], cfg, out, workers=0, progress=False, log=lambda m: None)
    assert [os.path.basename(p) for p in res["done"]] == ["linefit+__seed7.json"] and len(res["skipped"]) == 1
    assert json.loads(result_path(out, "fm16", methods[1], 7).read_text())["curve"] == lf["curve"]  # deterministic
    # another protocol in the same directory is refused rather than mixed in
    with pytest.raises(ValueError, match="another protocol"):
        run_benchmark(methods, [7], BenchConfig("fm16", **{**TINY, "steps": 30}), out, workers=0, progress=False,
                      log=lambda m: None)
    # so is a file of the same name made with other weights (here: Linefit under the name linefit+)
    with pytest.raises(ValueError, match="other nowcaster weights"):
        run_benchmark([Method("linefit+", "linefit", None)], [7], cfg, out, workers=0, progress=False,
                      log=lambda m: None)


def test_nowcaster_fingerprint_follows_the_weights_not_their_location(tmp_path):
    from nino_optim.nowcast.hub import load_nowcaster

    default = nowcaster_fingerprint("default")
    assert len(default) == 16 and nowcaster_fingerprint(None) is None
    model = load_nowcaster("default")
    model.save_pretrained(tmp_path / "copy")
    assert nowcaster_fingerprint(str(tmp_path / "copy")) == default
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    model.save_pretrained(tmp_path / "changed")
    assert nowcaster_fingerprint(str(tmp_path / "changed")) != default
    assert nowcaster_fingerprint("linefit") != nowcaster_fingerprint("linefit+")


@needs_data
def test_cli_bench_in_worker_processes_then_report(tmp_path, capsys):
    """The CLI path: a spawned worker process (1 thread), the results file, then the report on it."""
    out = tmp_path / "bench"
    argv = ["bench", "--task", "fm16", "--methods", "adam", "--seeds", "3", "--steps", "10", "--eval-every", "5",
            "--period", "10", "--train-examples", "512", "--test-examples", "200", "--target", "60",
            "--ladder", "30,50", "--out", str(out), "--workers", "1", "--no-progress"]
    main(argv)
    r = json.loads((out / "fm16" / "adam__seed3.json").read_text())
    assert r["threads"] == 1 and r["train_examples"] == 512 and r["test_examples"] == 200
    assert r["command"].startswith("nino-optim bench") and r["target"] == 0.6 and r["ladder"] == [0.3, 0.5]
    assert r["curve"]["steps"] == [0, 5, 10]
    main(argv)  # resumes: nothing to do
    assert "1 already in" in capsys.readouterr().out
    main(["report", "--runs", str(out), "--out", str(tmp_path / "docs")])
    assert (tmp_path / "docs" / "curves.png").stat().st_size > 0
    text = (tmp_path / "docs" / "README.md").read_text()
    assert "| `adam` |" in text and "nino-optim bench --task fm16 --methods adam" in text  # the stored command
    with pytest.raises(SystemExit, match="named twice"):
        main(argv[:4] + ["adam,adam"] + argv[5:])


@needs_kjv
def test_lm_runs_record_perplexity_falling_to_its_thresholds(tmp_path):
    out = tmp_path / "bench"
    cfg = BenchConfig("lm", steps=20, eval_every=10, period=10, target=60.0, ladder=(200.0, 100.0))
    res = run_benchmark(parse_methods("adam,linefit+"), [5], cfg, out, workers=0, progress=False,
                        log=lambda m: None)
    assert not res["failed"] and len(res["done"]) == 2
    adam, lf = (json.loads(result_path(out, "lm", m, 5).read_text()) for m in parse_methods("adam,linefit+"))
    assert adam["metric"] == "val_perplexity" and adam["higher_is_better"] is False
    assert adam["task_name"] == "LM-KJV" and adam["train_examples"] == len(kjv().train)
    values = adam["curve"]["values"]
    assert values[0] > 200 and values[-1] < values[0]
    assert adam["steps_to"]["200"] == 10 and values[1] <= 60 and adam["steps_to_target"] == 10
    # same seed, same start and batches: identical until the nowcast at step 10
    assert adam["curve"]["values"][0] == lf["curve"]["values"][0] and lf["nowcast_steps"] == [10]  # 20 is the last step


def test_methods_take_nino_options_in_brackets():
    m = parse_method("plain=default[schedule_aware=false; k_decay=0; period=500]")
    assert (m.name, m.spec, m.options) == ("plain", "default", (("schedule_aware", False), ("k_decay", 0),
                                                                 ("period", 500)))
    assert parse_method("linefit+[reset_base_state=true]").options == (("reset_base_state", True),)
    with pytest.raises(ValueError, match="plain Adam takes none"):
        parse_method("adam[k_decay=0]")
    with pytest.raises(ValueError, match="expected"):
        parse_method("x=default[oops]")


def test_schedule_is_part_of_the_protocol_only_when_used():
    constant, cosine = BenchConfig("fm16"), BenchConfig("fm16", schedule="cosine", warmup=0.1)
    assert "schedule" not in constant.protocol()  # results files from before schedules stay valid
    assert (cosine.protocol()["schedule"], cosine.protocol()["warmup"]) == ("cosine", 0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        BenchConfig("fm16", schedule="step")


@needs_data
def test_scheduled_runs_resume_and_their_thresholds_are_set_by_the_report(tmp_path):
    cfg = BenchConfig("fm16", schedule="cosine", **TINY)
    methods = [parse_method("adam"), parse_method("plain=linefit+[schedule_aware=false]")]
    res = run_benchmark(methods, [0], cfg, tmp_path, workers=0, progress=False, log=lambda *_: None)
    assert len(res["done"]) == 2 and not res["failed"]
    data = json.loads(result_path(tmp_path, "fm16", methods[1], 0).read_text())
    assert data["options"] == {"schedule_aware": False} and data["config"]["schedule"] == "cosine"
    other = BenchConfig("fm16", schedule="cosine", **{**TINY, "target": 0.7, "ladder": (0.4,)})
    res = run_benchmark(methods, [0], other, tmp_path, workers=0, progress=False, log=lambda *_: None)
    assert len(res["skipped"]) == 2  # another target reads the same curves: nothing to rerun
    with pytest.raises(ValueError, match="another protocol"):
        run_benchmark(methods, [0], BenchConfig("fm16", **TINY), tmp_path, workers=0, progress=False,
                      log=lambda *_: None)
    aware = [parse_method("plain=linefit+")]  # same name, other options: refused, not mixed
    with pytest.raises(ValueError, match="other nowcaster weights"):
        run_benchmark(aware, [0], cfg, tmp_path, workers=0, progress=False, log=lambda *_: None)

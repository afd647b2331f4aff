"""`sjc eval`: its tables, resuming an interrupted eval, reusing earlier cells, bad input, and its workers."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sjc.cli import main

from helpers import EVAL, sjc, assert_one_line_error, fake_eval_cells


def test_eval_writes_tables(capsys, tmp_path):
    prefix = tmp_path / "ev"
    rc, out, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", "oracle", *EVAL,
                       "--out", prefix)
    assert rc == 0, err
    md = (tmp_path / "ev.md").read_text()
    assert "paas" in md and "oracle" in md and "a blue sphere" in md
    data = json.loads((tmp_path / "ev.json").read_text())
    assert len(data["summary"]) == 2 and len(data["rows"]) == 2
    assert {s["variant"] for s in data["summary"]} == {"paas", "oracle"}
    for s in data["summary"]:
        assert isinstance(s["iou"], float) and isinstance(s["psnr"], float)
    assert data["config"]["optim"]["steps"] == 20
    assert "(2 cells)" in out
    assert "[2/2] a blue sphere |" in err and "ETA" in err   # one progress line per finished cell
    assert not (tmp_path / "ev.partial.jsonl").exists()


def test_eval_interrupted_keeps_finished_cells_and_resumes(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate

    trained = []

    def fake_cell(args, stop_at=None):
        _, prompt, variant, seed, _ = args
        if len(trained) == stop_at:
            raise KeyboardInterrupt
        trained.append((prompt, variant, seed))
        return {"prompt": prompt, "variant": variant, "seed": seed, "seconds": 1.0, "iou": 0.5 + seed / 10,
                "psnr": 20.0 + seed, "iou_rot": 0.5, "best_rotation": 0.0, "psnr_rot": 20.0}

    args = ["eval", "--prompts", "a blue sphere", "a red cube", "--variants", "paas", "--seeds", 2, *EVAL,
            "--out", tmp_path / "ev"]
    monkeypatch.setattr(sjc_evaluate, "eval_cell", lambda a: fake_cell(a, stop_at=3))
    rc, _, err = sjc(capsys, *args)
    assert rc == 130 and "ev.partial.jsonl" in err and "the same command resumes" in err
    assert len(trained) == 3 and not (tmp_path / "ev.json").exists()
    monkeypatch.setattr(sjc_evaluate, "eval_cell", fake_cell)
    rc, out, err = sjc(capsys, *args)
    assert rc == 0, err
    assert "3 of 4 cells already done" in err and "[4/4] a red cube | paas | seed 1" in err
    assert trained == [("a blue sphere", "paas", 0), ("a blue sphere", "paas", 1), ("a red cube", "paas", 0),
                       ("a red cube", "paas", 1)]   # every cell trained once
    data = json.loads((tmp_path / "ev.json").read_text())
    assert [(r["prompt"], r["seed"]) for r in data["rows"]] == [c[::2] for c in trained]
    assert data["summary"][1]["psnr"] == pytest.approx(20.5) and data["summary"][1]["iou_std"] == pytest.approx(0.05)
    assert not (tmp_path / "ev.partial.jsonl").exists()
    # a partial file of other settings is not mixed in; the error names the fields that differ
    other = json.loads(json.dumps(data["config"]))
    other["optim"]["steps"] += 1
    for header, hint in [({"config": other}, "other settings (optim.steps)"), ({"config": {"steps": 1}}, "other settings (camera")]:
        (tmp_path / "ev.partial.jsonl").write_text(json.dumps(header) + "\n")
        rc, _, err = sjc(capsys, *args)
        assert_one_line_error(rc, err, "ev.partial.jsonl", hint)


def test_eval_reuses_the_cells_of_an_earlier_eval_with_the_same_settings(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate

    trained = []

    def fake_cell(args):
        _, prompt, variant, seed, _ = args
        trained.append((prompt, variant, seed))
        return {"prompt": prompt, "variant": variant, "seed": seed, "seconds": 1.0, "iou": 0.5 + seed / 10,
                "psnr": 20.0 + seed + len(trained), "iou_rot": 0.5, "best_rotation": 0.0, "psnr_rot": 20.0}

    monkeypatch.setattr(sjc_evaluate, "eval_cell", fake_cell)
    prompts = ["--prompts", "a blue sphere", "a red cube", "--variants", "paas"]
    rc, _, err = sjc(capsys, "eval", *prompts, *EVAL, "--out", tmp_path / "seed0")
    assert rc == 0, err
    first = json.loads((tmp_path / "seed0.json").read_text())["rows"]
    trained.clear()
    rc, _, err = sjc(capsys, "eval", *prompts, "--seeds", 2, *EVAL, "--out", tmp_path / "ev",
                     "--reuse", tmp_path / "seed0.json")
    assert rc == 0, err
    assert "reusing 2 of 4 cells" in err and "already done" not in err   # reused, not resumed: no partial file
    assert trained == [("a blue sphere", "paas", 1), ("a red cube", "paas", 1)]   # seed 0 is not trained again
    rows = json.loads((tmp_path / "ev.json").read_text())["rows"]
    assert [(r["prompt"], r["seed"]) for r in rows] == [("a blue sphere", 0), ("a blue sphere", 1),
                                                         ("a red cube", 0), ("a red cube", 1)]
    assert [rows[0], rows[2]] == first   # the reused rows, as they were
    # other settings, or a file that is not an eval's .json: one line, before any training
    trained.clear()
    for bad, hint in [(tmp_path / "seed0.json", "optim.steps"), (tmp_path / "seed0.md", "not the .json"),
                      (tmp_path / "nothing.json", "no such file")]:
        rc, _, err = sjc(capsys, "eval", *prompts, "--seeds", 2, "--steps", 21, "--grid-size", "12",
                         "--resolution", "8", "--out", tmp_path / "ev2", "--reuse", bad)
        assert_one_line_error(rc, err, "--reuse", str(bad), hint)
    assert trained == [] and not (tmp_path / "ev2.json").exists()


def test_the_shipped_main_table_is_reusable_at_the_defaults(capsys, tmp_path, monkeypatch):
    """docs/eval.json's cells match today's defaults and weights, so `--reuse docs/eval.json` takes them, trains none."""
    import sjc.evaluate as sjc_evaluate

    monkeypatch.setattr(sjc_evaluate, "eval_cell", lambda *a: pytest.fail("trained a cell docs/eval.json holds"))
    shipped = Path(__file__).resolve().parents[1] / "docs" / "eval.json"
    rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "a red cube", "--variants", "paas", "--seeds", 3,
                     "--reuse", shipped, "--out", tmp_path / "ev")
    assert rc == 0, err
    rows = json.loads((tmp_path / "ev.json").read_text())["rows"]
    assert rows == [r for r in json.loads(shipped.read_text())["rows"] if r["prompt"] in ("a blue sphere", "a red cube")]


def test_eval_reuse_compares_the_prior_weights_not_their_path(capsys, tmp_path, monkeypatch):
    from sjc.priors.text_unet import BUILTIN_TOY_MODEL

    trained = []
    fake_eval_cells(monkeypatch, trained)
    prompts = ["--prompts", "a blue sphere", "--variants", "paas"]
    assert sjc(capsys, "eval", *prompts, *EVAL, "--out", tmp_path / "seed0")[0] == 0
    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(BUILTIN_TOY_MODEL, same)
    shutil.copytree(BUILTIN_TOY_MODEL, other)
    cfg = other / "scheduler" / "scheduler_config.json"
    cfg.write_text(cfg.read_text() + " ")   # one byte more: other files, so other cells
    trained.clear()
    rc, _, err = sjc(capsys, "eval", *prompts, *EVAL, "--model", same, "--out", tmp_path / "a",
                     "--reuse", tmp_path / "seed0.json")
    assert rc == 0 and "reusing 1 of 1 cells" in err and trained == []
    rc, _, err = sjc(capsys, "eval", *prompts, *EVAL, "--model", other, "--out", tmp_path / "b",
                     "--reuse", tmp_path / "seed0.json")
    assert_one_line_error(rc, err, "other settings (prior_weights)")
    data = json.loads((tmp_path / "seed0.json").read_text())
    del data["config"]["prior_weights"]   # as written before 2026-12-06
    (tmp_path / "old.json").write_text(json.dumps(data))
    rc, _, err = sjc(capsys, "eval", *prompts, *EVAL, "--out", tmp_path / "c", "--reuse", tmp_path / "old.json")
    assert_one_line_error(rc, err, "none recorded, so its prior cannot be checked")
    assert trained == []


def test_eval_trains_a_repeated_prompt_or_variant_once_and_labels_its_spread(capsys, tmp_path, monkeypatch):
    trained = []
    fake_eval_cells(monkeypatch, trained)
    rc, out, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "a blue sphere", "--variants", "paas", "paas",
                       "--seeds", 2, *EVAL, "--out", tmp_path / "ev")
    assert rc == 0, err
    assert trained == [("a blue sphere", "paas", 0), ("a blue sphere", "paas", 1)]
    data = json.loads((tmp_path / "ev.json").read_text())
    assert len(data["rows"]) == 2 and [s["seeds"] for s in data["summary"]] == [2]
    assert data["summary"][0]["psnr_std"] == pytest.approx(0.5)   # population SD of 20 and 21
    md = (tmp_path / "ev.md").read_text()
    assert sum(line.startswith("| a blue sphere | paas |") for line in md.splitlines()) == 1
    assert sum(line.startswith("| paas |") for line in md.splitlines()) == 1 and "20.50 ± 0.50" in md
    assert md.rstrip().endswith("± is the population standard deviation over the seeds (divided by n, not n − 1).")
    assert "(2 cells)" in out


def test_eval_with_more_jobs_than_cells_gives_the_cells_every_thread(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate

    threads = []
    fake_eval_cells(monkeypatch, [])
    fake = sjc_evaluate.eval_cell
    monkeypatch.setattr(sjc_evaluate, "eval_cell", lambda args: threads.append(args[-1]) or fake(args))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:   # one cell, two jobs: one worker, in this process, with both threads (not one thread, one idle worker)
        rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", *EVAL, "--jobs", 2,
                         "--out", tmp_path / "ev")
    finally:
        torch.set_num_threads(before)
    assert rc == 0, err
    assert threads == [2]


@pytest.mark.parametrize("prompts,variants,hint", [
    (["a blue sphere"], ["paas", "paas:bogus"], "'bogus'"),
    (["a blue sphere", "a photo of a cat"], ["paas"], "a photo of a cat"),
    (["a blue sphere"], ["nomethod"], "--method"),
])
def test_eval_bad_input_fails_before_training(capsys, tmp_path, monkeypatch, prompts, variants, hint):
    import sjc.evaluate as sjc_evaluate

    def no_training(*a, **k):
        raise AssertionError("eval started training before validating its input")

    monkeypatch.setattr(sjc_evaluate, "eval_cell", no_training)
    rc, _, err = sjc(capsys, "eval", "--prompts", *prompts, "--variants", *variants, *EVAL,
                     "--out", tmp_path / "ev")
    assert_one_line_error(rc, err, hint)
    assert not (tmp_path / "ev.md").exists() and not (tmp_path / "ev.json").exists()


def test_eval_zero_seeds(capsys, tmp_path):
    rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", "--seeds", 0, *EVAL,
                     "--out", tmp_path / "ev")
    assert_one_line_error(rc, err, "--seeds")
    assert not (tmp_path / "ev.md").exists()


@pytest.mark.parametrize("flags", [["--method", "sds"], ["--no-video"], ["--no-mesh"],
                                   ["--out-dir", "x"], ["--ckpt-every", "5"], ["--preview-every", "5"],
                                   ["--overwrite"]])
def test_eval_has_no_flags_for_settings_it_sets_per_cell_or_never_uses(capsys, tmp_path, flags):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--prompts", "a blue sphere", "--variants", "paas", *EVAL, *flags, "--out", str(tmp_path / "ev")])
    assert e.value.code == 2
    assert "unrecognized arguments: " + flags[0] in capsys.readouterr().err
    assert not (tmp_path / "ev.md").exists()


def test_eval_seed_is_not_read_as_seeds(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate

    monkeypatch.setattr(sjc_evaluate, "eval_cell", lambda *a: pytest.fail("trained with --seed"))
    rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", *EVAL, "--seed", 3,
                     "--out", tmp_path / "ev")
    assert_one_line_error(rc, err, "--seeds N", "not --seed 3")


def test_eval_workers_end_when_the_eval_is_killed(tmp_path):
    """A SIGKILLed `sjc eval --jobs N` takes its worker processes with it (no orphans training cells)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from sjc.evaluate import die_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'), initializer=die_with_parent)\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 60)\n"
        "    time.sleep(0.5)\n"
        "    os._exit(9)\n")   # dies without any cleanup, as under SIGKILL
    with open(tmp_path / "out.txt", "w") as f:   # a file, not a pipe that an orphan would hold open
        subprocess.run([sys.executable, str(script)], stdout=f, timeout=60)
    worker = int((tmp_path / "out.txt").read_text().split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, 9)
        pytest.fail("the worker outlived its killed parent")


def test_ctrl_c_in_eval_names_the_default_partial_file(capsys, tmp_path, monkeypatch):
    import sjc.evaluate as sjc_evaluate

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sjc_evaluate, "eval_cell", interrupted)
    rc, _, err = sjc(capsys, "eval", "--prompts", "a blue sphere", "--variants", "paas", *EVAL)
    assert rc == 130 and err.strip() == ("sjc: interrupted: finished cells are kept in outputs/eval.partial.jsonl, "
                                         "the same command resumes")

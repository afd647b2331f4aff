"""The polish sweep's summary: PSNR differences paired by (prompt, seed) against the reference setting."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "polish_sweep", Path(__file__).resolve().parents[1] / "experiments" / "scripts" / "polish_sweep.py")
polish_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(polish_sweep)


def _row(setting, prompt, seed, psnr):
    return {"setting": setting, "prompt": prompt, "seed": seed, "psnr": psnr}


def test_summary_table_pairs_by_prompt_and_seed():
    rows = [_row("default", "a", 0, 20.0), _row("default", "b", 0, 30.0),
            _row("default", "a", 1, 22.0), _row("default", "b", 1, 32.0),
            _row("x", "a", 0, 21.0), _row("x", "b", 0, 29.0),
            _row("x", "a", 1, 22.5), _row("x", "b", 1, 32.5)]
    lines = polish_sweep.summary_table(rows).strip().splitlines()
    assert lines[2].startswith("| default | 4 | 26.00 | +0.000 |")
    x = [c.strip() for c in lines[3].split("|")[1:-1]]
    # mean 26.25; paired differences +1, −1, +0.5, +0.5 → mean +0.25; per seed 0.0 and +0.5;
    # per prompt a: +0.75 (better), b: −0.25 (worse)
    assert x == ["x", "4", "26.25", "+0.250", "+0.00, +0.50", "1 / 1"]


def test_settings_change_one_thing_each():
    known = {"steps", "sigma", "method", "guidance", "lr", "num_noise"}
    assert polish_sweep.SETTINGS["default"] == {}
    for name, change in polish_sweep.SETTINGS.items():
        assert set(change) <= known, name
        assert len(change) <= 1, name

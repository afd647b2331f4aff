"""The run configuration: flags from its fields, their bounds, what the prior fills in, config.json reruns, and
the help text."""
import json

import pytest
import torch
from safetensors.torch import load_file

from sjc.cli import main

from helpers import TINY, NO_OUTPUTS, POLISH_FOLLOWS_SJC, sjc, assert_one_line_error


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(capsys, tmp_path, prompt):
    rc, _, err = sjc(capsys, "generate", prompt, *TINY, "--steps", 5, "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, "prompt is empty", 'sjc generate "a blue sphere"')
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag,value", [("--grid-size", "0"), ("--grid-size", "-3"), ("--grid-size", "1"),
                                        ("--steps", "0"), ("--resolution", "0")])
def test_bad_sizes(capsys, tmp_path, flag, value):
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 5, flag, value,
                     "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, flag, value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag,value", [("--renderer", "nope"), ("--device", "nope"), ("--step-ratio", "0"),
                                        ("--radius", "0"), ("--device", "meta"), ("--device", "mps"),
                                        ("--seed", "99999999999999999999"), ("--seed", "-1")])
def test_bad_render_settings(capsys, tmp_path, flag, value):
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 2, *NO_OUTPUTS, flag, value,
                     "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, flag)


@pytest.mark.parametrize("flags,hint", [(["--polish-steps", "-1"], "--polish-steps"),
                                        (["--polish-sigma-min", "0.5", "--polish-sigma-max", "0.1"], "--polish-sigma"),
                                        (["--polish-guidance-scale", "-1"], "--polish-guidance-scale"),
                                        (["--polish-num-noise", "0"], "--polish-num-noise"),
                                        (["--guidance-scale", "-2"], "--guidance-scale")])
def test_bad_polish_settings(capsys, tmp_path, flags, hint):
    rc, _, err = sjc(capsys, "generate", "a blue sphere", *TINY, "--steps", 5, "--out-dir", tmp_path / "r", *flags)
    assert_one_line_error(rc, err, hint)


@pytest.mark.parametrize("argv,flag", [
    (["sample2d", "a red cube", "--guidance-scale", "nan"], "--guidance-scale"),
    (["sample2d", "a red cube", "--sigma-max", "inf"], "--sigma-max"),
    (["paas2d", "a red cube", "--lr", "nan"], "--lr"),
    (["prior", "train", "--lr", "inf"], "--lr"),
    (["prior", "train", "--timestep-power", "nan"], "--timestep-power"),
    (["generate", "a red cube", "--emptiness-weight=-inf"], "--emptiness-weight"),
])
def test_a_number_that_is_not_finite_is_one_line_naming_its_flag(capsys, argv, flag):
    rc, _, err = sjc(capsys, *argv)
    assert_one_line_error(rc, err, flag, "must be a finite number")


def test_a_config_whose_prompt_is_not_text_is_one_line_error(capsys, tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"prompt": 5}))
    rc, _, err = sjc(capsys, "generate", "--config", tmp_path / "p.json", *TINY, "--steps", 2, *NO_OUTPUTS,
                     "--out-dir", tmp_path / "run")
    assert_one_line_error(rc, err, "prompt must be text", "5")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("polish_field,sjc_field,guide_attr", POLISH_FOLLOWS_SJC)
def test_polish_setting_defaults_to_the_sjc_steps_own(polish_field, sjc_field, guide_attr):
    """Unset (and no prior default), the polish takes the SJC steps' scale or K; set, it changes the polish alone."""
    from sjc.config import RunConfig
    from sjc.build import build_run

    def run(polish_value):
        cfg = RunConfig(prompt="a blue sphere", prior="closed-form")
        cfg.field.grid_size, cfg.render.resolution = 12, 8
        setattr(cfg.guidance, sjc_field, 2)
        setattr(cfg.guidance, polish_field, polish_value)
        return build_run(cfg)

    unset, other = run(None), run(4)
    assert getattr(unset.cfg.guidance, polish_field) == 2            # resolved, so config.json records it
    assert getattr(unset.polish_guide, guide_attr) == 2 and getattr(other.polish_guide, guide_attr) == 4
    assert getattr(unset.guide, guide_attr) == getattr(other.guide, guide_attr) == 2


def test_config_rerun_keeps_its_prompt_and_rejects_unknown_keys(capsys, tmp_path):
    rc, _, _ = sjc(capsys, "generate", "a red cube", *TINY, "--steps", 3, *NO_OUTPUTS, "--out-dir", tmp_path / "a")
    assert rc == 0
    rc, _, _ = sjc(capsys, "generate", "--config", tmp_path / "a" / "config.json", "--out-dir", tmp_path / "b")
    assert rc == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["prompt"] == "a red cube"
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    # Resolved: the σ range drawn (the closed-form prior's [0.5, 6], as table entries) and the view scheme used.
    g = cfg["guidance"]
    assert 0.5 <= g["sigma_min"] < 0.51 and 5.9 < g["sigma_max"] <= 6 and g["view_scheme"] == "reference"
    a, b = (load_file(tmp_path / d / "checkpoint.safetensors") for d in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # the rerun is the same run
    cfg["field"]["grid_sise"] = 7
    (tmp_path / "typo.json").write_text(json.dumps(cfg))
    rc, _, err = sjc(capsys, "generate", "--config", tmp_path / "typo.json", "--out-dir", tmp_path / "c")
    assert_one_line_error(rc, err, "grid_sise")


def test_a_config_rerun_with_other_settings_derives_what_the_run_filled_in(capsys, tmp_path):
    """config.json records what the run filled in itself; a new run from it derives again what depends on a flag
    given anew (the emptiness multiplier's step on --steps), keeps the rest and whatever was edited by hand."""
    rc, _, err = sjc(capsys, "generate", "a red cube", *TINY, "--steps", 30, *NO_OUTPUTS, "--out-dir", tmp_path / "a")
    assert rc == 0, err
    cfg_a = json.loads((tmp_path / "a" / "config.json").read_text())
    res = cfg_a["resolved"]
    assert res["reg.emptiness_mult_step"] == cfg_a["reg"]["emptiness_mult_step"] == 15
    assert res["optim.polish_steps"] == 0 and res["guidance.sigma_min"] == cfg_a["guidance"]["sigma_min"]
    assert not {"prior", "optim.steps", "field.grid_size"} & res.keys()   # given as flags

    def rerun(name, *flags, config=tmp_path / "a" / "config.json"):
        rc, _, err = sjc(capsys, "generate", "--config", config, *flags, "--out-dir", tmp_path / name, "--quiet")
        assert rc == 0, err
        return json.loads((tmp_path / name / "config.json").read_text())

    cfg_b = rerun("b", "--steps", 40)
    assert cfg_b["reg"]["emptiness_mult_step"] == 20 and cfg_b["optim"]["steps"] == 40   # half of the new steps
    assert cfg_b["resolved"] == {**res, "reg.emptiness_mult_step": 20}
    for name, flags in (("c", ["--no-video"]), ("d", ["--seed", "3"])):   # nothing filled in depends on these
        cfg = rerun(name, *flags)
        assert {**cfg, "output": None, "optim": None} == {**cfg_a, "output": None, "optim": None}
    edited = json.loads(json.dumps(cfg_a))
    edited["guidance"]["sigma_min"] = 1.0   # by hand, after the run
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    cfg_e = rerun("e", "--steps", 40, config=tmp_path / "edited.json")
    assert cfg_e["guidance"]["sigma_min"] == 1.0 and "guidance.sigma_min" not in cfg_e["resolved"]
    assert cfg_e["reg"]["emptiness_mult_step"] == 20 and cfg_e["guidance"]["sigma_max"] == cfg_a["guidance"]["sigma_max"]
    # One end of the σ range given anew: the other end as a fresh run with that flag gets it (the whole table's).
    cfg_f = rerun("f", "--sigma-min", "0.3")
    rc, _, err = sjc(capsys, "generate", "a red cube", *TINY, "--steps", 30, *NO_OUTPUTS, "--sigma-min", "0.3",
                     "--out-dir", tmp_path / "g")
    assert rc == 0, err
    fresh = json.loads((tmp_path / "g" / "config.json").read_text())
    assert cfg_f["guidance"]["sigma_max"] == fresh["guidance"]["sigma_max"] > cfg_a["guidance"]["sigma_max"]
    # The first form of the record, names only (written by this project for a day), still reads.
    first_form = {**cfg_a, "resolved": sorted(res)}
    (tmp_path / "first.json").write_text(json.dumps(first_form))
    assert rerun("h", "--steps", 40, config=tmp_path / "first.json")["resolved"] == cfg_b["resolved"]


def test_a_config_of_one_prior_given_another_takes_that_priors_defaults(tmp_path):
    """A closed-form run's config with --prior toy gets the toy prior's steps, polish and σ range, not the
    closed-form prior's; the settings given by hand stay."""
    from sjc.config import RunConfig
    from sjc.build import build_run

    a = RunConfig(prompt="a red cube", prior="closed-form")
    a.field.grid_size = 12
    build_run(a)
    assert a.optim.polish_steps == 0 and "optim.polish_steps" in a.resolved and "field.grid_size" not in a.resolved
    b = RunConfig.from_dict(json.loads(json.dumps(a.to_dict())))   # as read back from its config.json
    b.prior = "toy"
    b.forget_resolved(given={"prior"})
    build_run(b)
    toy = build_run(RunConfig(prompt="a red cube")).cfg
    for section, name in [("optim", "steps"), ("optim", "polish_steps"), ("guidance", "sigma_min"),
                          ("guidance", "sigma_max"), ("guidance", "guidance_scale"), ("guidance", "view_scheme"),
                          ("reg", "emptiness_weight"), ("reg", "emptiness_mult_step"), ("camera", "fov_min")]:
        assert getattr(getattr(b, section), name) == getattr(getattr(toy, section), name), name
    assert b.optim.polish_steps > 0 and b.field.grid_size == 12 and b.prior == "toy"


def test_help_says_what_each_flag_is_and_what_unset_means(capsys):
    """generate --help shows each prior's defaults for the flags left unset; prior train/dataset flags say what
    they are (their dataclass comments), not only their default."""
    from sjc.priors.text_unet import PixelTextPrior

    for argv in (["generate", "--help"], ["prior", "train", "--help"], ["prior", "dataset", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        if argv[0] == "generate":
            assert f"toy: --grid-size {PixelTextPrior.defaults['grid_size']}, --steps {PixelTextPrior.defaults['steps']}" in text
            assert "see above" not in text
        elif argv[1] == "train":
            assert "--timestep-power TIMESTEP_POWER t = ⌊T·u^p⌋" in text and "--batch BATCH images per step (default 64)" in text
        else:
            assert "--views VIEWS random cameras per shape (default 2000)" in text


def test_the_configuration_reference_lists_every_setting():
    """docs/configuration.md holds the settings table the code generates (python -m sjc.config), so it cannot drift."""
    from pathlib import Path

    from sjc.config import RunConfig
    from sjc.settings import reference_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    table = reference_table(RunConfig)
    assert table in doc, "docs/configuration.md is out of date: regenerate its table with python -m sjc.config"
    assert table.count("\n| `--") == 53 and "| `--seed` | optim | `0` | ≥ 0, < 2^62 |" in table


def test_a_config_with_no_prompt_takes_the_default_one(capsys, tmp_path):
    """"prompt": null in a config.json reads as no prompt (generate's default), not as a flag that does not exist."""
    cfg = json.loads(json.dumps(__import__("sjc.config").config.RunConfig().to_dict()))
    cfg["prompt"] = None
    (tmp_path / "p.json").write_text(json.dumps(cfg))
    rc, _, err = sjc(capsys, "generate", "--config", tmp_path / "p.json", *TINY, "--steps", 2, *NO_OUTPUTS,
                     "--out-dir", tmp_path / "run")
    assert rc == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["prompt"] == "a blue sphere"


def test_help_names_where_the_priors_defaults_are_and_prints_no_empty_default(capsys):
    """Every command's help: a setting left to the prior points at generate --help, which lists them, and says what
    a prior that lists none fills in; no flag shows '(default )'."""
    for argv in (["generate", "--help"], ["eval", "--help"], ["sample2d", "--help"], ["resume", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "listed below" not in text and "(default )" not in text, argv
        if argv[0] in ("generate", "eval"):
            assert "(default: the prior's; sjc generate --help lists them)" in text
            assert "Where a prior lists none: --resolution is its image size" in text
    with pytest.raises(SystemExit):
        main(["sample2d", "--help"])
    assert "image size of the closed-form prior" in " ".join(capsys.readouterr().out.split())


def test_flags_take_unambiguous_abbreviations_and_a_wrong_one_names_its_command(capsys):
    from sjc.cli import build_parser

    a = build_parser().parse_args(["generate", "x", "--grid", "12", "--emptiness-w", "3"])
    assert a.grid_size == 12 and a.emptiness_weight == 3.0
    with pytest.raises(SystemExit) as e:
        main(["generate", "x", "--no-such-flag", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip() == ("sjc: error: unrecognized arguments: --no-such-flag 1 "
                                                 "(see sjc generate --help)")
    with pytest.raises(SystemExit):
        main(["prior", "dataset", "--bogus"])
    assert "(see sjc prior dataset --help)" in capsys.readouterr().err


def test_a_positional_is_named_as_such_in_its_error(capsys):
    rc, _, err = sjc(capsys, "bench", "foo")
    assert_one_line_error(rc, err, "unknown suite 'foo'; choose one of renderer, sweep, sd, unet")


def test_an_optional_tuple_setting_reads_back_as_a_tuple():
    import argparse
    import dataclasses
    from typing import Optional

    from sjc.settings import add_flags, from_flags, setting

    @dataclasses.dataclass
    class Opts:
        size: Optional[tuple[int, ...]] = setting(None, "a size")
        names: Optional[list[str]] = setting(None, "names")

    p = argparse.ArgumentParser()
    add_flags(p, Opts)
    o = from_flags(Opts, p.parse_args(["--size", "3", "4", "--names", "a"]))
    assert o.size == (3, 4) and type(o.size) is tuple and o.names == ["a"]

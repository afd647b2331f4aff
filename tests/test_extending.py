"""A prior of one's own: one registered class gives --prior NAME everywhere; an instance goes through the library."""
import json

import pytest

from helpers import NO_OUTPUTS, GreenDisc, assert_one_line_error, ckpt_step, sjc


def test_a_new_prior_is_one_class_and_one_registry_entry(capsys, tmp_path, monkeypatch):
    import sjc.priors as priors

    cls = GreenDisc.make()
    monkeypatch.setitem(priors.PRIORS, "green-disc", cls)   # what @register_prior does
    d = tmp_path / "run"
    rc, out, err = sjc(capsys, "generate", "a green disc", "--prior", "green-disc", "--quiet", *NO_OUTPUTS,
                       "--out-dir", d, "--ckpt-every", 5)
    assert rc == 0, err
    assert json.loads((d / "config.json").read_text())["prior"] == "green-disc" and ckpt_step(d) == 20
    rc, out, err = sjc(capsys, "resume", d, "--steps", 30, "--quiet")
    assert rc == 0 and ckpt_step(d) == 30, err
    rc, _, err = sjc(capsys, "generate", "x", "--prior", "nope", "--out-dir", tmp_path / "n")
    assert_one_line_error(rc, err, "available: toy, closed-form, sd, unet2d, green-disc")


def test_a_prior_instance_goes_through_generate_resume_and_load_run(tmp_path):
    from sjc.config import RunConfig
    from sjc.pipeline import generate, load_run, resume

    cls = GreenDisc.make()
    cfg = RunConfig(prompt="a green disc")
    cfg.output.out_dir, cfg.output.video, cfg.output.mesh, cfg.optim.steps = str(tmp_path / "r"), False, False, 10
    out_dir, metrics = generate(cfg, progress=False, prior=cls())
    assert metrics["steps"] == 10 and (out_dir / "views.png").is_file()
    _, metrics = resume(out_dir, progress=False, steps=15, prior=cls())
    assert metrics["steps"] == 15
    run = load_run(out_dir, prior=cls())
    assert run.step == 15 and run.prior.name == "green-disc"
    img = run.prior.decode(run.render(__import__("sjc.pipeline").pipeline.preview_cameras(50.0, 1.5, "cpu")).image)
    assert img.shape == (4, 3, 8, 8)
    assert json.loads((out_dir / "config.json").read_text())["prior"] == "green-disc"
    from sjc.errors import SJCError

    cfg = RunConfig(prompt="a green disc", prior="toy")   # config.json would name a prior that did not run
    cfg.output.out_dir = str(tmp_path / "r2")
    with pytest.raises(SJCError, match="names prior 'toy' but the prior given is 'green-disc'"):
        generate(cfg, progress=False, prior=cls())
    assert not (tmp_path / "r2").exists()
    with pytest.raises(SJCError, match=r"unknown prior 'green-disc'.*prior=it"):   # the command line cannot
        load_run(out_dir)


def test_a_prior_with_few_defaults_takes_the_reference_ones(tmp_path):
    """A prior that sets only some defaults (as the README invites) gets the reference values for the rest; one
    whose config_defaults() leaves a needed field out fails with one line naming its flag, before any folder."""
    from sjc.config import RunConfig
    from sjc.errors import SJCError
    from sjc.pipeline import generate

    base = GreenDisc.make()

    class Few(base):
        defaults = {"grid_size": 12, "steps": 5}

    class Broken(base):
        def config_defaults(self):
            return {k: v for k, v in super().config_defaults().items() if k != "fov_max"}

    cfg = RunConfig(prompt="a green disc")
    cfg.output.out_dir, cfg.output.video, cfg.output.mesh = str(tmp_path / "few"), False, False
    out_dir, metrics = generate(cfg, progress=False, prior=Few())
    saved = json.loads((out_dir / "config.json").read_text())
    assert metrics["steps"] == 5 and saved["field"]["grid_size"] == 12
    assert (saved["camera"]["fov_min"], saved["camera"]["fov_max"], saved["guidance"]["guidance_scale"],
            saved["reg"]["emptiness_weight"]) == (40.0, 70.0, 1.0, 1.0)
    cfg = RunConfig(prompt="a green disc")
    cfg.output.out_dir = str(tmp_path / "broken")
    with pytest.raises(SJCError, match="the green-disc prior gives no default for --fov-max: give them on the command"):
        generate(cfg, progress=False, prior=Broken())
    assert not (tmp_path / "broken").exists()


def test_a_prior_built_on_a_built_in_one_takes_that_ones_model_folders(tmp_path, monkeypatch):
    """--prior my-sd --model <an SD pipeline>: the files call for sd, and a subclass of it fits them too."""
    import sjc.priors as priors
    from sjc.config import RunConfig
    from sjc.errors import SJCError
    from sjc.priors.stable_diffusion import StableDiffusionPrior
    from sjc.tiny import build_tiny_sd

    class MySD(StableDiffusionPrior):
        name = "my-sd"

    monkeypatch.setitem(priors.PRIORS, "my-sd", MySD)
    folder = build_tiny_sd(tmp_path / "sd")
    cfg = RunConfig(prompt="x", prior="my-sd")
    cfg.model.model = str(folder)
    assert priors.prior_name(cfg) == "my-sd" and priors.prior_class(cfg) is MySD
    cfg.prior = "unet2d"   # an unrelated prior still does not fit them
    with pytest.raises(SJCError, match="--prior unet2d does not fit .* holds a sd model"):
        priors.prior_name(cfg)


def test_a_broken_prior_plugin_is_a_warning_not_a_crash_of_every_command(tmp_path):
    """An installed package whose sjc.priors entry point fails to import: sjc still runs, and says which one."""
    import subprocess
    import sys

    dist = tmp_path / "site" / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sjc.priors]\nbroken = no_such_module_anywhere\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site")}
    p = subprocess.run([sys.executable, "-m", "sjc", "generate", "--help"], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "usage: sjc generate" in p.stdout
    assert "prior plugin 'broken' (no_such_module_anywhere) did not load" in p.stderr and "Traceback" not in p.stderr

"""Diffusers priors on tiny random pipelines built offline: σ tables, D against the scheduler, CFG, v→ε, loading."""
import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from PIL import Image

from sjc.config import RunConfig
from sjc.errors import SJCError
from sjc.priors import load_prior, prior_name
from sjc.priors.vp import (alpha_bar_from_sigma, classifier_free_guidance, sigma_to_t, sigmas_from_alphas_cumprod,
                           v_to_eps, vp_input)
from sjc.tiny import build_tiny_sd, build_tiny_unet2d, sd_scheduler


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"sd": build_tiny_sd(root / "sd"), "sd_v": build_tiny_sd(root / "sd_v", prediction_type="v_prediction"),
            "ddpm": build_tiny_unet2d(root / "ddpm"), "ve": build_tiny_unet2d(root / "ve", schedule="ve")}


def prior_for(model, **kw):
    cfg = RunConfig(prompt="a red cube")
    cfg.model.model = str(model)
    for k, v in kw.items():
        setattr(cfg.model, k, v)
    return load_prior(cfg)


def test_sd_sigma_table_matches_the_scheduler():
    s = sd_scheduler()
    sig = sigmas_from_alphas_cumprod(s.alphas_cumprod)
    a = s.alphas_cumprod.double()
    assert torch.allclose(sig.double(), ((1 - a) / a).sqrt(), rtol=1e-6)
    assert sig[0].item() == pytest.approx(0.0292, abs=5e-4) and sig[-1].item() == pytest.approx(14.61, abs=0.01)
    assert torch.allclose(alpha_bar_from_sigma(sig.double()), a, rtol=1e-6)
    # Snapping: a σ slightly off a table entry maps back to its t, on the device, in log space.
    ts = torch.tensor([0, 1, 17, 500, 998, 999])
    assert torch.equal(sigma_to_t(sig[ts] * 1.0004, sig), ts)
    assert torch.equal(sigma_to_t(torch.tensor([1e-6, 1e6]), sig), torch.tensor([0, 999]))
    # Nearest in log σ, not in σ: just above the geometric midpoint of two entries (below their arithmetic one)
    # the upper entry is nearer in log σ, the lower one in σ.
    t = torch.tensor([0, 3, 10])   # where neighbours differ by 4–6%, so the two midpoints are apart in float64
    lo, hi = sig[t].double(), sig[t + 1].double()
    mid = ((lo * hi).sqrt() + (lo + hi) / 2) / 2   # between the geometric and the arithmetic midpoint
    assert torch.equal(sigma_to_t(mid, sig.double()), t + 1)


def test_sd_denoiser_uses_the_snapped_table_sigma(tiny):
    """D(x, σ) asks the network at the nearest table entry and uses that entry's σ throughout."""
    p = prior_for(tiny["sd"])
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    cond = p.cond("a red cube")
    sigma = p.sigmas[400]
    assert torch.equal(p.D(x, sigma * 1.0005, cond), p.D(x, sigma, cond))


def test_sd_prior_default_sigma_range_is_the_reference(tiny):
    p = prior_for(tiny["sd"])
    lo, hi = p.default_train_sigmas()[[0, -1]].tolist()
    assert lo == pytest.approx(0.098, abs=1e-3) and hi == pytest.approx(12.23, abs=0.01)
    assert p.default_train_sigmas().numel() == 1000 - 40
    assert p.shape == (4, 8, 8) and not p.pixel_space and p.merged_defaults()["guidance_scale"] == 100.0 and p.sampling_guidance_scale == 7.5


def test_vp_noise_is_ve_noise_rescaled():
    """add_noise(x0, ε, t) / √ᾱ_t = x0 + σ_t·ε: the VE view of the scheduler's forward process."""
    s = sd_scheduler()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([5, 300, 900])
    xt = s.add_noise(x0, eps, t)
    a = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    sig = sigmas_from_alphas_cumprod(s.alphas_cumprod)[t].view(-1, 1, 1, 1)
    assert torch.allclose(xt / a.sqrt(), x0 + sig * eps, atol=1e-4)
    assert torch.allclose(vp_input(x0 + sig * eps, sig), xt, atol=1e-5)


def test_v_to_eps_inverts_the_scheduler_velocity():
    s = sd_scheduler("v_prediction")
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([40, 700])
    xt = s.add_noise(x0, eps, t)
    v = s.get_velocity(x0, eps, t)
    assert torch.allclose(v_to_eps(v, xt, s.alphas_cumprod[t].view(-1, 1, 1, 1)), eps, atol=1e-5)


def test_cfg_combination():
    u, c = torch.randn(2, 4), torch.randn(2, 4)
    assert torch.allclose(classifier_free_guidance(u, c, 1.0), c)
    assert torch.allclose(classifier_free_guidance(u, c, 0.0), u)
    assert torch.allclose(classifier_free_guidance(u, c, 100.0), u + 100 * (c - u))


@pytest.mark.parametrize("key", ["sd", "sd_v"])
def test_sd_denoiser_matches_the_scheduler_x0(tiny, key):
    """D(x_t/√ᾱ, σ_t) equals DDPMScheduler.step(...).pred_original_sample for ε and v models."""
    p = prior_for(tiny[key])
    s = sd_scheduler(p.prediction_type)
    cond = p.cond("a red cube")
    g = torch.Generator().manual_seed(2)
    for t in (20, 400, 950):
        xt = torch.randn(1, 4, 8, 8, generator=g)
        with torch.no_grad():
            out = p.unet(xt, torch.tensor([t]), encoder_hidden_states=cond[1:]).sample
        ref = s.step(out, t, xt).pred_original_sample
        sig = p.sigmas[t]
        d = p.D(xt / s.alphas_cumprod[t].sqrt(), sig, cond, guidance=1.0)
        assert torch.allclose(d, ref, atol=1e-4), t


def test_sd_guidance_is_linear_in_the_scale(tiny):
    p = prior_for(tiny["sd"])
    cond = p.cond("side view of a red cube")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    sig = torch.tensor(2.0)
    d0, d1, d7 = (p.D(x, sig, cond, guidance=s) for s in (0.0, 1.0, 7.5))
    assert torch.allclose(d7, d0 + 7.5 * (d1 - d0), atol=1e-4)
    assert not torch.allclose(d0, d1)
    # Embeddings are computed once per distinct prompt.
    assert p.cond("side view of a red cube") is cond


def test_sd_decode_and_vertex_colours(tiny):
    p = prior_for(tiny["sd"])
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    rgb = p.decode(z)
    assert rgb.shape == (2, 3, 16, 16)
    with torch.no_grad():   # latents are VAE latents × scaling_factor: decode undoes the factor first
        want = p.vae.decode(z / p.vae.config.scaling_factor).sample.clamp(-1, 1)
    assert torch.allclose(rgb, want, atol=1e-6) and p.vae.config.scaling_factor != 1
    rgb = p.feature_to_rgb(torch.randn(7, 4))
    assert rgb.shape == (7, 3) and rgb.abs().max() <= 1


def test_unet2d_vp_and_ve(tiny):
    vp = prior_for(tiny["ddpm"])
    assert type(vp).__name__ == "UNet2DVPPrior" and vp.shape == (3, 8, 8)
    from diffusers import DDPMScheduler
    s = DDPMScheduler.from_pretrained(tiny["ddpm"], subfolder="scheduler")
    xt = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    t = 321
    with torch.no_grad():
        ref = s.step(vp.unet(xt, t).sample, t, xt).pred_original_sample
    assert torch.allclose(vp.D(xt / s.alphas_cumprod[t].sqrt(), vp.sigmas[t]), ref, atol=1e-4)

    ve = prior_for(tiny["ve"])
    assert type(ve).__name__ == "UNet2DVEPrior"
    assert ve.sigmas[0].item() == pytest.approx(0.01, rel=1e-4) and ve.sigmas[-1].item() == pytest.approx(50.0, rel=1e-4)
    x, sig = torch.randn(2, 3, 8, 8), torch.tensor(3.0)
    with torch.no_grad():
        score = ve.unet(x, sig.expand(2)).sample
    assert torch.allclose(ve.D(x, sig), x + 9.0 * score, atol=1e-4)


def test_prior_detection(tiny):
    cfg = RunConfig(prompt="x")
    assert prior_name(cfg) == "toy"
    for key, name in (("sd", "sd"), ("ddpm", "unet2d"), ("ve", "unet2d")):
        cfg.model.model = str(tiny[key])
        assert prior_name(cfg) == name


def test_loading_errors(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(SJCError, match="no model at"):
        prior_for(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SJCError, match="not a diffusers model folder"):
        prior_for(tmp_path / "empty")
    with pytest.raises(SJCError, match="not in the local Hugging Face cache .* sjc never downloads"):
        prior_for("someone/some-model")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SJCError, match="not a model checkpoint"):
        prior_for(tmp_path / "notes.txt")
    broken = tmp_path / "broken"
    shutil.copytree(tiny["sd"], broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(SJCError, match="could not load the model"):
        prior_for(broken)
    # A single file with no base config available offline fails with one line, not a download attempt.
    (tmp_path / "ft.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(SJCError, match="could not load the model"):
        prior_for(tmp_path / "ft.safetensors")


def test_hub_id_resolves_from_the_local_cache(tiny, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    snap = hub / "models--tiny--sd" / "snapshots" / "0123abc"
    shutil.copytree(tiny["sd"], snap)
    (hub / "models--tiny--sd" / "refs").mkdir()
    (hub / "models--tiny--sd" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    p = prior_for("tiny/sd")
    assert p.shape == (4, 8, 8)


def test_hub_cache_dir_follows_huggingface_hub_environment_order(tmp_path, monkeypatch):
    from sjc.priors.loading import hub_cache_dir

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hub_cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_cache_dir() == tmp_path / "hub"


def test_generate_with_a_tiny_sd_pipeline_writes_every_output(tiny, tmp_path):
    from sjc.cli import main

    out = tmp_path / "run"
    rc = main(["generate", "a red cube", "--model", str(tiny["sd"]), "--steps", "4", "--grid-size", "8",
               "--video-frames", "2", "--ckpt-every", "2", "--out-dir", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["prior"] == "sd" and cfg["render"]["resolution"] == 8 and cfg["guidance"]["guidance_scale"] == 100.0
    for name in ("checkpoint.safetensors", "views.png", "depth.png", "opacity.png", "turntable.mp4", "metrics.json"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and "ground_truth" not in metrics


def test_sd_run_exports_a_vertex_coloured_mesh(tiny, tmp_path):
    from sjc.cli import main
    from sjc.pipeline import load_run, write_mesh
    import trimesh

    out = tmp_path / "run"
    assert main(["generate", "a red cube", "--model", str(tiny["sd"]), "--steps", "3", "--grid-size", "10",
                 "--no-video", "--no-mesh", "--out-dir", str(out), "--quiet", "--device", "cpu"]) == 0
    run = load_run(out)
    level = float(run.field.density_grid().detach().median())   # a 3-step field is nearly uniform: mesh its median level
    (path,) = write_mesh(run, out, formats=["ply"], level=level)
    mesh = trimesh.load(path, process=False)
    assert len(mesh.faces) > 0 and mesh.visual.vertex_colors.shape[1] == 4


def test_sample2d_from_every_prior_kind(tiny, tmp_path, capsys):
    from PIL import Image
    from sjc.cli import main

    for key in ("sd", "sd_v", "ddpm", "ve"):
        out = tmp_path / f"{key}.png"
        assert main(["sample2d", "a red cube", "--model", str(tiny[key]), "--n", "2", "--steps", "3",
                     "--device", "cpu", "--scale", "1", "--out", str(out)]) == 0
        w, h = Image.open(out).size
        assert (w, h) == ((32, 16) if key.startswith("sd") else (16, 8))   # 2 samples side by side
    assert main(["sample2d", "a red cube", "--n", "0", "--out", str(tmp_path / "x.png")]) == 2
    assert "--n must be a positive number" in capsys.readouterr().err


def test_sample2d_takes_generates_model_flags(tiny, tmp_path, monkeypatch):
    """--half, --attention-slicing, --offload, --compile and --channels-last reach the prior as in generate."""
    import sjc.priors
    from sjc.cli import main

    seen, real = [], sjc.priors.load_prior
    monkeypatch.setattr(sjc.priors, "load_prior", lambda cfg, device: seen.append(cfg.model) or real(cfg, device))
    images = []
    for flags in (["--no-channels-last"], ["--channels-last", "--attention-slicing", "--no-half", "--no-compile"]):
        out = tmp_path / f"{len(images)}.png"
        assert main(["sample2d", "a red cube", "--model", str(tiny["sd"]), "--n", "1", "--steps", "2", "--device",
                     "cpu", "--scale", "1", "--out", str(out), *flags]) == 0
        images.append(np.asarray(Image.open(out)).astype(int))
    assert [(m.channels_last, m.attention_slicing, m.half, m.compile, m.offload) for m in seen] == \
        [(False, False, None, None, False), (True, True, False, False, False)]
    assert np.abs(images[0] - images[1]).max() <= 2   # the same samples, whatever the layout (8-bit rounding)


def test_oracle_needs_the_toy_world(tiny, tmp_path, capsys):
    from sjc.cli import main
    rc = main(["generate", "a red cube", "--model", str(tiny["sd"]), "--method", "oracle", "--steps", "2",
               "--grid-size", "8", "--out-dir", str(tmp_path / "run"), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "oracle needs a toy-world prompt" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- review fixes, 2026-12-06
def prior_as(model, prior):
    cfg = RunConfig(prompt="a red cube", prior=prior)
    cfg.model.model = str(model)
    return load_prior(cfg)


def test_x0_prediction_models_are_their_own_denoiser(tmp_path):
    """prediction_type 'sample': D(x_t/√ᾱ, σ_t) equals the scheduler's x̂₀, for SD and for a UNet2DModel."""
    from diffusers import DDPMScheduler

    for folder, shape, text in ((build_tiny_sd(tmp_path / "sd_x0", prediction_type="sample"), (1, 4, 8, 8), True),
                                (build_tiny_unet2d(tmp_path / "ddpm_x0", prediction_type="sample"), (1, 3, 8, 8), False)):
        p = prior_for(folder)
        assert p.prediction_type == "sample"
        s = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
        cond = p.cond("a red cube") if text else None
        g = torch.Generator().manual_seed(5)
        for t in (20, 400, 950):
            xt = torch.randn(*shape, generator=g)
            with torch.no_grad():
                out = (p.unet(xt, torch.tensor([t]), encoder_hidden_states=cond[1:]) if text else p.unet(xt, t)).sample
            ref = s.step(out, t, xt).pred_original_sample
            d = p.D(xt / s.alphas_cumprod[t].sqrt(), p.sigmas[t], cond, guidance=1.0)
            assert torch.allclose(d, ref, atol=1e-4), (folder.name, t)


def test_an_unknown_prediction_type_is_one_line_error(tiny, tmp_path):
    folder = tmp_path / "odd"
    shutil.copytree(tiny["ddpm"], folder)
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["prediction_type"] = "flow"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(SJCError, match="prediction_type 'flow' is not supported"):
        prior_for(folder)


def test_a_zero_terminal_snr_schedule_has_finite_sigmas(tiny, tmp_path):
    folder = tmp_path / "zsnr"
    shutil.copytree(tiny["sd_v"], folder)
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rescale_betas_zero_snr"] = True
    cfg_path.write_text(json.dumps(cfg))
    from diffusers import DDPMScheduler
    assert DDPMScheduler.from_pretrained(folder, subfolder="scheduler").alphas_cumprod[-1] == 0
    p = prior_for(folder)
    assert torch.isfinite(p.sigmas).all()
    assert p.sigmas[-1].item() == pytest.approx((2.0 ** 24 - 1) ** 0.5, rel=1e-5)   # ᾱ = 2⁻²⁴ at the end
    x = torch.randn(1, 4, 8, 8) * p.sigmas[-1]
    assert torch.isfinite(p.D(x, p.sigmas[-1], p.cond("a red cube"), guidance=2.0)).all()


def test_a_prior_that_does_not_fit_the_model_folder_is_named(tiny, tmp_path):
    with pytest.raises(SJCError, match="--prior sd does not fit .*which holds a unet2d model; pass --prior unet2d"):
        prior_as(tiny["ddpm"], "sd")
    with pytest.raises(SJCError, match="--prior toy does not fit .*which holds a sd model"):
        prior_as(tiny["sd"], "toy")
    with pytest.raises(SJCError, match="closed-form .* takes no --model"):
        prior_as(tiny["sd"], "closed-form")
    with pytest.raises(SJCError, match="text-conditioned U-Net alone: pass the pipeline folder above it"):
        prior_for(tiny["sd"] / "unet")
    from sjc.priors.text_unet import PixelTextPrior
    with pytest.raises(SJCError, match="latent diffusion model .*use --prior sd"):
        PixelTextPrior(str(tiny["sd"]))


def test_damaged_or_incomplete_pipeline_folders_name_what_is_wrong(tiny, tmp_path):
    bad_index = tmp_path / "bad_index"
    shutil.copytree(tiny["sd"], bad_index)
    (bad_index / "model_index.json").write_text("[1, 2]")
    with pytest.raises(SJCError, match="not a diffusers JSON object"):
        prior_for(bad_index)
    no_unet = tmp_path / "no_unet"
    shutil.copytree(tiny["sd"], no_unet)
    shutil.rmtree(no_unet / "unet")
    with pytest.raises(SJCError, match=r"has no unet/: a text-conditioned diffusers pipeline folder holds"):
        prior_for(no_unet)


def test_a_folder_with_only_fp16_variant_weights_loads(tiny, tmp_path):
    folder = tmp_path / "fp16"
    shutil.copytree(tiny["sd"], folder)
    for f in list(folder.glob("*/*.safetensors")):
        f.rename(f.with_name(f.name.replace(".safetensors", ".fp16.safetensors")))
    a, b = prior_for(tiny["sd"]), prior_for(folder)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.D(x, 2.0, a.cond("a red cube")), b.D(x, 2.0, b.cond("a red cube")))


@pytest.mark.parametrize("bare", [False, True])
def test_a_unet2d_folder_with_only_fp16_variant_weights_loads(tiny, tmp_path, bare):
    source = tiny["ddpm"] / "unet" if bare else tiny["ddpm"]
    folder = tmp_path / "fp16"
    shutil.copytree(source, folder)
    for f in list(folder.rglob("*.safetensors")):
        f.rename(f.with_name(f.name.replace(".safetensors", ".fp16.safetensors")))
    a, b = prior_for(source), prior_for(folder)
    x = torch.randn(1, *a.shape, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.D(x, 2.0, None), b.D(x, 2.0, None))


def test_model_config_mistakes_are_named(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "ft.safetensors").write_bytes(b"\0" * 64)
    (tmp_path / "v2-inference-v.yaml").write_text("model: {}\n")
    cases = [(tiny["sd"], str(tiny["sd"]), "is for a single checkpoint file"),
             (tmp_path / "ft.safetensors", str(tmp_path / "v2-inference-v.yaml"), "original .yaml configs"),
             (tmp_path / "ft.safetensors", str(tiny["ddpm"]), "is not a Stable Diffusion pipeline folder"),
             (tmp_path / "ft.safetensors", str(tmp_path / "nowhere"), "--model-config: no model at")]
    for model, model_config, hint in cases:
        with pytest.raises(SJCError, match=hint.replace(".", r"\.")):
            prior_for(model, model_config=model_config)
    # Priors that never read it refuse it rather than ignore it.
    with pytest.raises(SJCError, match="the unet2d prior does not read it"):
        prior_for(tiny["ddpm"], model_config=str(tiny["sd"]))
    cfg = RunConfig(prompt="a red cube")
    cfg.model.model_config = str(tiny["sd"])
    with pytest.raises(SJCError, match="the toy prior does not read it"):
        load_prior(cfg)


@pytest.mark.parametrize("prior,flag,read", [
    ("toy", "compile", False), ("toy", "offload", False), ("toy", "attention-slicing", False),
    ("toy", "channels-last", True), ("toy", "half", True), ("closed-form", "half", False),
    ("unet2d", "channels-last", False), ("unet2d", "half", True)])
def test_model_flags_a_prior_ignores_are_refused_on_the_command_line(tiny, tmp_path, capsys, prior, flag, read,
                                                                      monkeypatch):
    """A model flag given on the command line that the run's prior would silently ignore is one line; the same
    value in a config.json (an older run's, or another prior's run) is left alone."""
    import sjc.pipeline
    from sjc.cli import main

    def reached(*a, **k):   # the flag passed the check; no need to train
        raise SJCError("reached build_run")

    monkeypatch.setattr(sjc.pipeline, "build_run", reached)
    model = ["--model", str(tiny["ddpm"])] if prior == "unet2d" else []
    rc = main(["generate", "a red cube", "--prior", prior, *model, f"--{flag}", "--out-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    if read:
        assert "reached build_run" in err
    else:   # refused before the model loads
        assert err.startswith(f"sjc: error: --{flag}: the {prior} prior does not read it (the ")
    cfg = RunConfig(prompt="a red cube", prior=prior)   # from a config.json: loads
    cfg.model.model = str(tiny["ddpm"]) if prior == "unet2d" else None
    setattr(cfg.model, flag.replace("-", "_"), True)
    assert load_prior(cfg) is not None


def test_a_bare_unet2d_folder_loads_with_a_warning_about_its_assumed_schedule(tiny, capsys):
    p = prior_for(tiny["ddpm"] / "unet")
    assert type(p).__name__ == "UNet2DVPPrior" and p.prediction_type == "epsilon"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sjc: warning:" in err and "assuming DDPM's linear β schedule" in err

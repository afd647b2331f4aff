"""The method's identities and invariants: PAAS and the √2σ relation, guidance forms, regularisers."""
import math

import pytest
import torch
import torch.nn.functional as F

from sjc.guidance import GRADIENTS, naive, paas, sample_sigma, sds
from sjc.priors import ClosedFormPrior, load_prior
from sjc.priors.base import Prior
from sjc.priors.closed_form import mmse_denoise
from sjc.errors import SJCError
from sjc.toyworld import ToyObject, image_set


def cosine(a, b):
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_mmse_denoiser_limits_and_stability():
    g = torch.Generator().manual_seed(0)
    ys = torch.rand(5, 48, generator=g) * 2 - 1
    z = ys[2:3] + 0.01 * torch.randn(1, 48, generator=g)
    # Tiny σ: the nearest image exactly, with no NaN despite huge logits.
    out = mmse_denoise(z * 100, torch.tensor([1e-4]), ys)
    assert torch.isfinite(out).all()
    assert torch.allclose(mmse_denoise(z, torch.tensor([1e-3]), ys), ys[2:3], atol=1e-6)
    # Huge σ: the mean image.
    assert torch.allclose(mmse_denoise(z, torch.tensor([1e4]), ys), ys.mean(0, keepdim=True), atol=1e-5)
    # Matches the direct formula at a moderate σ.
    s = 0.7
    w = torch.softmax(-((z - ys) ** 2).sum(1) / (2 * s * s), 0)
    assert torch.allclose(mmse_denoise(z, torch.tensor([s]), ys), (w[:, None] * ys).sum(0, keepdim=True), atol=1e-6)


def paas_vs_sqrt2_score(prior, x, s, cond, g, num_noise):
    """PAAS(x, σ) on the score scale (×1/σ) and the score of p at √2σ, (D(x, √2σ) − x)/(2σ²)."""
    sigma = torch.tensor(s)
    paas_score = paas(prior, x, sigma, cond, None, g, num_noise=num_noise) / s
    score_sqrt2 = (prior.D(x, math.sqrt(2) * sigma, cond) - x) / (2 * s * s)
    return paas_score, score_sqrt2


def random_set_prior(n: int, size: int, seed: int):
    """A closed-form prior over n random images, its conditioning, a random x and the generator used."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    prior = ClosedFormPrior(resolution=size, images=ys)
    cond = prior.cond("set")
    return prior, cond, torch.rand(1, 3, size, size, generator=g) * 2 - 1, g


def test_sqrt2_sigma_identity_single_image():
    """For one training image y, PAAS(x, σ) = (y − x)/σ² = 2 · score of p at √2σ, exactly."""
    prior, cond, x, g = random_set_prior(1, 8, seed=1)
    for s in (0.1, 0.5, 2.0):
        paas_score, score_sqrt2 = paas_vs_sqrt2_score(prior, x, s, cond, g, 4)
        ratio = (paas_score.norm() / score_sqrt2.norm()).item()
        assert ratio == pytest.approx(2.0, abs=1e-5)
        assert cosine(paas_score, score_sqrt2) > 0.999999


def test_sqrt2_sigma_direction_many_images():
    """For a toy-world image set (252 views) the PAAS direction agrees with the score at √2σ for σ ≤ 1."""
    imgs, _ = image_set(ToyObject("cube", "red"), 8)
    prior = ClosedFormPrior(resolution=8, images=imgs)
    cond = prior.cond("set")
    g = torch.Generator().manual_seed(2)
    for s in (0.1, 0.3, 1.0):
        for i in (0, 100, 200):
            x = imgs[i:i + 1] + 0.3 * torch.randn(1, 3, 8, 8, generator=g)
            paas_score, score_sqrt2 = paas_vs_sqrt2_score(prior, x, s, cond, g, 20000)
            assert cosine(paas_score, score_sqrt2) > 0.95, (s, i)
            assert 1.8 < (paas_score.norm() / score_sqrt2.norm()).item() < 2.2


def _same_noise_call(fn, prior, x, sigma, cond, seed=3, k=1):
    g = torch.Generator().manual_seed(seed)
    return fn(prior, x, sigma, cond, None, g, num_noise=k)


def test_guidance_forms_relations():
    prior, cond, x, g = random_set_prior(6, 4, seed=4)
    sigma = torch.tensor(0.8)
    vr = _same_noise_call(GRADIENTS["paas"], prior, x, sigma, cond)
    plain = _same_noise_call(GRADIENTS["paas-plain"], prior, x, sigma, cond)
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    # plain = variance-reduced minus the noise itself.
    assert torch.allclose(plain, vr - n, atol=1e-6)
    # SDS = (1 − ᾱ) · variance-reduced PAAS with 1 − ᾱ = σ²/(1 + σ²).
    s = _same_noise_call(sds, prior, x, sigma, cond)
    assert torch.allclose(s, vr * 0.64 / 1.64, atol=1e-6)
    # The naive score uses the clean render.
    assert torch.allclose(_same_noise_call(naive, prior, x, sigma, cond), (prior.D(x, sigma, cond) - x) / sigma, atol=1e-6)
    # K noise samples are averaged: K = 2 is the mean of two single draws of the same stream.
    k2 = _same_noise_call(GRADIENTS["paas"], prior, x, sigma, cond, k=2)
    n2 = torch.randn((2, *x.shape[1:]), generator=torch.Generator().manual_seed(3))
    manual = sum((prior.D(x + sigma * n2[i:i + 1], sigma, cond) - x) / sigma for i in range(2)) / 2
    assert torch.allclose(k2, manual, atol=1e-6)


def test_sigma_tables_and_sampling():
    prior = ClosedFormPrior(resolution=8)
    s = prior.sigmas
    assert (s[1:] > s[:-1]).all()
    default = prior.train_sigmas()
    assert default.min() >= prior.sigma_range[0] and default.max() <= prior.sigma_range[1]
    sub = prior.train_sigmas(0.5, 1.0)
    assert sub.min() >= 0.5 and sub.max() <= 1.0 and sub.numel() > 10
    with pytest.raises(SJCError, match="no σ"):
        prior.train_sigmas(100.0, 200.0)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_sigma(sub, g) for _ in range(2000)])
    assert set(draws.tolist()) <= set(sub.tolist())
    # Uniform over table entries: both halves of the table are drawn about equally often.
    idx = torch.searchsorted(sub, draws)
    frac_low = (idx < sub.numel() // 2).float().mean().item()
    assert 0.44 < frac_low < 0.56


def test_unknown_prior_is_a_clear_error():
    from sjc.config import RunConfig
    with pytest.raises(SJCError, match="unknown prior 'nope'; available: toy, closed-form, sd, unet2d"):
        load_prior(RunConfig(prompt="a red cube", prior="nope"))


def test_heun_sampler_lands_on_the_data():
    from sjc.sample2d import heun_sample, karras_sigmas

    s = karras_sigmas(10, 0.01, 10.0)
    assert s[0].item() == pytest.approx(10.0) and s[-2].item() == pytest.approx(0.01) and s[-1] == 0
    assert (s[1:] < s[:-1]).all()
    # One training image: every sample ends exactly on it.
    y = torch.rand(1, 3, 4, 4) * 2 - 1
    one = ClosedFormPrior(resolution=4, images=y)
    x = heun_sample(one, 3, steps=8, sigma_min=0.01, sigma_max=20.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, y.expand(3, -1, -1, -1), atol=1e-5)
    # A toy-world set: samples end within a small distance of some training view.
    imgs, _ = image_set(ToyObject("cone", "green"), 8)
    prior = ClosedFormPrior(resolution=8, images=imgs)
    x = heun_sample(prior, 4, steps=20, sigma_min=0.01, sigma_max=20.0, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(x.flatten(1), imgs.flatten(1)).min(1).values
    assert (nearest < 0.05).all()


def test_view_scheme_selects_the_closed_form_images_and_the_prompts():
    """--view-scheme fine: the exact prior conditions on 45° sectors; the loop asks with the matching prefixes."""
    from sjc.cameras import FINE_VIEWS, REFERENCE_VIEWS, orbit_cameras
    from sjc.config import RunConfig
    from sjc.guidance import prompt_variants, view_prompt
    from sjc.toyworld import image_set_cameras

    cfg = RunConfig(prompt="a red cube", prior="closed-form")
    cfg.guidance.view_scheme = "fine"
    prior = load_prior(cfg)
    assert prior.views is FINE_VIEWS
    cams = image_set_cameras()
    fine = [FINE_VIEWS.label(float(a), float(e)) for a, e in zip(cams.azimuth, cams.elevation)]
    ref = [REFERENCE_VIEWS.label(float(a), float(e)) for a, e in zip(cams.azimuth, cams.elevation)]
    # "front view of" now means ±22.5° (not ±45°); "front left view of" exists only in the fine scheme.
    assert prior.cond("front view of a red cube").shape[0] == fine.count("front") < ref.count("front")
    assert prior.cond("front left view of a red cube").shape[0] == fine.count("front left") > 0
    assert prior.cond("a red cube").shape[0] == len(fine)
    assert len(prompt_variants("a red cube", True, FINE_VIEWS)) == 1 + 12
    cam = orbit_cameras(torch.tensor([300.0]), torch.tensor([10.0]), torch.tensor([50.0]))
    assert view_prompt("a red cube", cam, True, FINE_VIEWS) == "front left view of a red cube"
    assert view_prompt("a red cube", cam, True, REFERENCE_VIEWS) == "side view of a red cube"


def test_view_scheme_errors():
    from sjc.config import RunConfig
    from sjc.build import build_run
    cfg = RunConfig(prompt="a red cube")
    cfg.guidance.view_scheme = "sideways"
    with pytest.raises(SJCError, match="unknown --view-scheme 'sideways'; choose one of reference, fine"):
        cfg.validate()
    cfg.guidance.view_scheme = "reference"   # the shipped toy prior was trained on the fine-bands scheme only
    with pytest.raises(SJCError, match="understands only 'fine-bands' view prompts"):
        build_run(cfg)


def test_closed_form_prior_takes_a_view_of_any_scheme():
    """A fine-bands view asked of a reference-scheme closed-form prior selects that view's images (it once selected
    none, and D(x, σ) = 0 drew a flat grey image)."""
    from sjc import toyworld
    from sjc.cameras import VIEW_SCHEMES
    from sjc.priors.closed_form import ClosedFormPrior

    prior = ClosedFormPrior(resolution=8)
    cams = toyworld.image_set_cameras()
    for prompt, scheme, label in (("low front left view of a red cube", "fine-bands", "low front left"),
                                  ("front view of a red cube", "reference", "front")):
        want = [VIEW_SCHEMES[scheme].label(float(a), float(e)) == label for a, e in zip(cams.azimuth, cams.elevation)]
        images = prior.encode(prompt)
        assert images.shape[0] == sum(want) > 0
        all_images, _ = prior._object_images(toyworld.parse_prompt(prompt)[1])
        assert torch.equal(images, all_images[torch.tensor(want)].flatten(1))


class GaussianDataPrior(Prior):
    """Data ~ N(0, I): the exact denoiser is D(x, σ) = x / (1 + σ²), and the probability-flow ODE
    dx/dσ = (x − D)/σ has the closed-form solution x(σ) ∝ √(1 + σ²)."""

    name, channels, height, width = "gaussian", 1, 2, 2

    def __init__(self):
        super().__init__()
        self.sigmas = torch.logspace(-3, 2, 100)

    def encode(self, prompt):
        return None

    def D(self, x, sigma, cond=None, guidance=None):
        return x / (1 + torch.as_tensor(sigma, dtype=x.dtype) ** 2)


def test_heun_sampler_is_second_order_on_gaussian_data():
    from sjc.sample2d import heun_sample

    prior = GaussianDataPrior()
    start = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0)) * 80.0   # what heun_sample draws
    exact = start / math.sqrt(1 + 80.0 ** 2)
    errs = []
    for steps in (20, 40):
        x = heun_sample(prior, 4, steps, 0.002, 80.0, generator=torch.Generator().manual_seed(0))
        errs.append(((x - exact).abs().max() / exact.abs().max()).item())
    # Heun's error falls ~4× per doubling of the steps (Euler's 2×: 0.127 → 0.064 here).
    assert errs[1] < 0.01 and errs[0] / errs[1] > 3.5, errs


def test_karras_schedule_interior_points():
    from sjc.sample2d import karras_sigmas

    s = karras_sigmas(3, 0.01, 10.0)
    assert s[1].item() == pytest.approx(((10 ** (1 / 7) + 0.01 ** (1 / 7)) / 2) ** 7, rel=1e-5)
    s = karras_sigmas(5, 0.002, 80.0, rho=3.0)
    ramp = torch.linspace(0, 1, 5, dtype=torch.float64)
    want = (80 ** (1 / 3) + ramp * (0.002 ** (1 / 3) - 80 ** (1 / 3))) ** 3
    assert torch.allclose(s[:-1].double(), want, rtol=1e-5) and s[-1] == 0


def test_sigma_draw_reaches_every_table_entry():
    table = torch.logspace(-1, 1, 20)
    g = torch.Generator().manual_seed(0)
    draws = {sample_sigma(table, g).item() for _ in range(2000)}
    assert draws == set(table.tolist())


def test_oracle_guide_points_at_the_true_render():
    from sjc.guidance import OracleGuide

    truth = torch.rand(1, 3, 4, 4)
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(OracleGuide(lambda cams: truth)(x, None, "", None), truth - x)


@pytest.mark.parametrize("renderer", ["dense", "fast"])
def test_sjc_step_descends_the_emptiness_loss_as_the_regulariser_defines_it(renderer):
    """With a zero score, one SJC step's density gradient is exactly λ·∂/∂θ of regularizers.emptiness_loss (the mean
    of log(1 + s·w) over the ray samples inside the box) at the step's camera."""
    from sjc.cameras import sample_train_cameras
    from sjc.config import RunConfig
    from sjc.regularizers import emptiness_loss
    from sjc.build import build_run
    from sjc.render import resolve_renderer
    from sjc.train import sjc_step

    cfg = RunConfig(prompt="a red cube", prior="closed-form")
    cfg.field.grid_size, cfg.render.resolution, cfg.render.renderer = 12, 8, renderer
    cfg.optim.steps, cfg.reg.emptiness_weight, cfg.output.device = 10, 3.0, "cpu"
    run = build_run(cfg)
    with torch.no_grad():
        run.field.density_raw.normal_(generator=torch.Generator().manual_seed(0))
    run.guide = lambda x, cams, prompt, gen: torch.zeros_like(x)
    before = {k: v.clone() for k, v in run.field.state_dict().items()}
    cam_state = run.generators["camera"].get_state()
    sjc_step(run, 0)
    got = run.field.density_raw.grad.clone()

    run.field.load_state_dict(before)   # the step has moved every parameter (d_scale too)
    run.generators["camera"].set_state(cam_state)
    cams = sample_train_cameras(1, cfg.camera, run.generators["camera"])
    run.renderer = resolve_renderer("dense", "cpu", cfg.reg.emptiness_scale)   # the reference: every weight materialised
    out = run.render(cams)
    loss = cfg.reg.emptiness_weight * emptiness_loss(out.weights, out.n_samples, cfg.reg.emptiness_scale)
    (want,) = torch.autograd.grad(loss, run.field.density_raw)
    assert got.abs().sum() > 0 and torch.allclose(got, want, rtol=1e-4, atol=1e-7)

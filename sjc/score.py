"""A finished run judged by its own prior, with no ground truth: how well the prior denoises the run's renders.

An object that looks like its prompt from every side is one the prior takes for its own data: noised a little and
denoised, each render comes back nearly unchanged. A second face, a floater or a wrong colour is pulled towards
what the prior expects instead. The score is minus the mean squared denoising error, in units of σ², over fixed
views (each with its view prompt), a few σ and seeded noise: the same run always gets the same score, higher is
better, and runs of one prompt and one prior compare (`sjc batch --select best` keeps the best seed by it).
How well it ranks runs by their true quality is measured in the toy world: docs/best-of-n.md.
"""
from __future__ import annotations

import torch

from .cameras import orbit_cameras
from .guidance import view_prompt

SCORE_AZIMUTHS = tuple(float(a) for a in range(0, 360, 45))
SCORE_ELEVATIONS = (0.0, 30.0)
# Data units (the toy prior's images span [-1, 1]): small enough that the render, not the noise, is what the prior
# judges, and large enough that the prompt and the view still matter to its answer.
SCORE_SIGMAS = (0.1, 0.2, 0.5, 1.0)
SCORE_NOISE = 4   # noise draws per view and σ


@torch.no_grad()
def prior_score(run, sigmas=SCORE_SIGMAS, n_noise: int = SCORE_NOISE, seed: int = 0) -> dict:
    """{"score": −mean error, "worst_view": −the largest view's error, "by_sigma": {σ: −mean error at σ}, ...}
    for a run's field under its prior; each σ is the prior's table entry nearest to the one asked for."""
    cfg, prior = run.cfg, run.prior
    az = torch.tensor([a for _ in SCORE_ELEVATIONS for a in SCORE_AZIMUTHS])
    el = torch.tensor([e for e in SCORE_ELEVATIONS for _ in SCORE_AZIMUTHS])
    cams = orbit_cameras(az, el, torch.full_like(az, cfg.camera.test_fov), cfg.camera.radius)
    x = run.render(cams.to(run.device)).image
    table = prior.sigmas.float().cpu()
    picked = sorted({float(table[(table - s).abs().argmin()]) for s in sigmas})
    gen = torch.Generator(run.device).manual_seed(seed)
    err = torch.zeros(len(cams), len(picked))
    for i in range(len(cams)):
        cond = prior.cond(view_prompt(cfg.prompt, cams[i], cfg.guidance.view_prompts, prior.views))
        xi = x[i:i + 1].expand(n_noise, *x.shape[1:])
        for j, s in enumerate(picked):
            noise = torch.randn(xi.shape, generator=gen, device=x.device, dtype=x.dtype)
            sigma = torch.tensor(s, device=x.device, dtype=x.dtype)
            d = prior.D(xi + sigma * noise, sigma, cond, 1.0)   # the conditional model itself: no guidance's pull
            err[i, j] = float(((d.float() - xi.float()) ** 2).mean()) / s ** 2
    per_view = err.mean(1)
    return {"score": -float(per_view.mean()), "worst_view": -float(per_view.max()),
            "by_sigma": {f"{s:g}": -float(err[:, j].mean()) for j, s in enumerate(picked)},
            "views": len(cams), "noise_per_view": n_noise, "seed": seed}

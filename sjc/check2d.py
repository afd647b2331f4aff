"""2D checks of a toy-world prior: which object is in an image, sample accuracy, and PAAS vs naive in 2D.

Classification is by the nearest true render: every (shape, view) coverage render of the dataset in
every colour (images are linear in the albedo, so the best of 10 colours × 7 shapes × V views is a few
matrix products), and the image is labelled with the (shape, colour) of the closest one in L2.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from tqdm import tqdm

from . import toyworld
from .guidance import GRADIENTS, sample_sigma
from .priors.base import Prior
from .sample2d import heun_sample


class NearestRender:
    """Labels images (B, 3, H, W) in [-1, 1] by the nearest rendered toy object over shapes × views × colours.

    With `view_labels` (S, V), the view-label index of each render's camera, `classify` can compare an image
    with the renders of one view only: the check of a view-prompted sample.
    """

    def __init__(self, shaded: torch.Tensor, background: torch.Tensor, max_views: Optional[int] = None,
                 view_labels: Optional[torch.Tensor] = None):
        s, b = shaded.float(), background.float()     # (S, V, 1, H, W)
        if max_views:
            s, b = s[:, :max_views], b[:, :max_views]
            view_labels = None if view_labels is None else view_labels[:, :max_views]
        self.view_labels = None if view_labels is None else view_labels.flatten()   # (S·V,)
        self.n_shapes, self.n_views = s.shape[:2]
        self.A = s.flatten(2).flatten(0, 1)           # (S·V, P) shaded coverage
        self.B = b.flatten(2).flatten(0, 1)           # (S·V, P) background coverage
        self.albedo = torch.tensor(list(toyworld.COLOURS.values()))   # (C, 3)
        self.AA = (self.A * self.A).sum(1)            # ‖A‖²
        self.BB = (self.B * self.B).sum(1)
        self.AB = (self.A * self.B).sum(1)

    def distances(self, images: torch.Tensor, view: Optional[int] = None) -> torch.Tensor:
        """Squared L2 distances (N, S·V, C) from each image (in [0, 1] units) to every candidate render.

        With a view-label index, renders from other views are out of the running (distance +inf).
        """
        y = ((images.float().clamp(-1, 1) + 1) / 2).flatten(2)             # (N, 3, P)
        yy = (y * y).sum(-1)                                               # (N, 3)
        yA = y @ self.A.t()                                                # (N, 3, S·V)
        yB = y @ self.B.t()
        # ‖y_ch − B·bg − a_ch·A‖² summed over channels, for every colour's albedo a
        bg = toyworld.BACKGROUND
        base = yy.sum(1)[:, None] - 2 * bg * yB.sum(1) + 3 * bg * bg * self.BB[None]          # (N, S·V)
        lin = torch.einsum("ck,nks->nsc", self.albedo, -2 * yA + 2 * bg * self.AB[None, None])
        quad = (self.albedo ** 2).sum(1)[None, None] * self.AA[None, :, None]
        d = base[..., None] + lin + quad
        if view is not None:
            if self.view_labels is None:
                raise ValueError("NearestRender was built without view_labels: it cannot restrict to one view")
            d = d.masked_fill((self.view_labels != view)[None, :, None], float("inf"))
        return d

    def classify(self, images: torch.Tensor, chunk: int = 64,
                 view: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(shape index, colour index, RMSE to the nearest render in [-1, 1] units) per image (of one view)."""
        shapes, colours, errs = [], [], []
        for i in range(0, images.shape[0], chunk):
            d = self.distances(images[i:i + chunk], view)
            best = d.flatten(1).argmin(1)
            sv, c = best // d.shape[2], best % d.shape[2]
            shapes.append(sv // self.n_views)
            colours.append(c)
            errs.append((d.flatten(1).min(1).values.clamp_min(0) / images[0].numel()).sqrt() * 2)
        return torch.cat(shapes), torch.cat(colours), torch.cat(errs)


def sample_accuracy(prior: Prior, classifier: NearestRender, objects: list[toyworld.ToyObject], n: int = 8,
                    steps: int = 20, guidance: Optional[float] = None, seed: int = 0,
                    views: Sequence[Optional[str]] = (None,), progress: bool = False):
    """n Heun samples per object and view, classified: (one row per object and view with the shares right, samples).

    A view label puts its prefix on the prompt and compares the samples with that view's renders only (the
    classifier needs `view_labels` in the prior's scheme); None samples without a prefix, against every view.
    """
    shape_names, colour_names = list(toyworld.SHAPES), list(toyworld.COLOURS)
    rows, images = [], []
    for k, obj in enumerate(tqdm(objects, desc="objects", unit="object", disable=not progress, leave=False)):
        g = torch.Generator().manual_seed(seed + k)
        for view in views:
            prompt = (prior.views.prefix(view) if view else "") + obj.caption
            x = heun_sample(prior, n, steps, 0.02, 80.0, prompt, guidance, g).clamp(-1, 1)
            s, c, _ = classifier.classify(x, view=prior.views.labels.index(view) if view else None)
            ok_s = s == shape_names.index(obj.shape)
            ok_c = c == colour_names.index(obj.colour)
            rows.append({"object": obj.caption, "shape": obj.shape, "colour": obj.colour, "view": view,
                         "correct": float((ok_s & ok_c).float().mean()), "shape_ok": float(ok_s.float().mean()),
                         "colour_ok": float(ok_c.float().mean())})
            images.append(x)
    return rows, torch.cat(images)


def optimise_image(prior: Prior, prompt: str, method: str, steps: int = 500, lr: float = 0.05,
                   guidance: Optional[float] = None, seed: int = 0, start: float = 0.0,
                   progress: bool = False) -> torch.Tensor:
    """The paper's 2D experiment: ascend one image from a flat start with a score step (a GRADIENTS name: paas,
    paas-plain, naive or sds)."""
    g = torch.Generator().manual_seed(seed)
    sigmas = prior.train_sigmas()
    x = torch.full((1, *prior.shape), start, requires_grad=True)
    opt = torch.optim.Adamax([x], lr=lr)
    cond = prior.cond(prompt)
    fn = GRADIENTS[method]
    for _ in tqdm(range(steps), desc=f"{method}: {prompt}", unit="step", disable=not progress, leave=False):
        sigma = sample_sigma(sigmas, g)
        with torch.no_grad():
            grad = fn(prior, x.detach(), sigma, cond, guidance if guidance is not None else prior.sampling_guidance_scale, g)
        opt.zero_grad()
        x.grad = -grad
        opt.step()
        with torch.no_grad():
            x.clamp_(-1, 1)
    return x.detach()

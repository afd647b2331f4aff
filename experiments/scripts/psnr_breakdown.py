"""Where the PSNR gap to the oracle is: silhouette or inside (docs/toy-prior.md, main table).

Trains one default run (seed 0 unless given) of a toy prompt with a method and, at the evaluation views, compares its
render with the truth: the 2D silhouette IoU (opacity > 0.5 against true coverage > 0.5), the RMSE where
both are opaque, the share of the squared error on pixels where the silhouettes disagree, and the PSNR
after fitting a gain and offset per image and channel on the overlap (what a global colour fix recovers).
Then the silhouette's edge band (pixels within one pixel of the true outline: some pixel of their 3×3
neighbourhood is at least partly covered and not every one is fully covered): its share of the squared error, the render's summed opacity against the true
coverage (below 1: the silhouette is thinner or fainter than the truth), and the PSNR with the band's pixels,
or with every other pixel, taken from the truth (what perfect edges, or a perfect rest, would give).

    python experiments/scripts/psnr_breakdown.py "a red cube" paas [SEED]   # prints one JSON line; oracle for the ceiling

(docs/toy-prior.md: the first table was measured at the defaults of the time, guidance 3 and no appearance
polish, before the edge band was added; the edge-band table at the defaults of 2026-12-03.)
"""
import json
import sys

import torch
import torch.nn.functional as F

from sjc.cameras import eval_cameras
from sjc.config import RunConfig
from sjc.evaluate import variant_config
from sjc.metrics import psnr
from sjc.toyworld import render_coverage, render_truth
from sjc.build import build_run
from sjc.train import train

def main() -> None:
    prompt, variant = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "paas"
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    run = train(build_run(variant_config(RunConfig(prompt="eval"), prompt, variant, seed)), None, progress=False)
    obj = run.prior.truth(prompt)
    cams, res = eval_cameras(run.cfg.camera.test_fov, run.cfg.camera.radius), run.resolution
    with torch.no_grad():
        out = run.render(cams.to(run.device))
        image, opaque = run.prior.decode(out.image).cpu().clamp(-1, 1), out.opacity.cpu() > 0.5
    target = render_truth(obj, cams, res, res)
    cov = 1 - render_coverage(obj.shape, cams, res, res)[1]   # the true coverage of each pixel
    covered = cov > 0.5
    both, disagree = covered & opaque, covered ^ opaque
    sq = ((image - target) ** 2).sum(1, keepdim=True)
    fixed = image.clone()
    for b in range(image.shape[0]):
        m = both[b, 0]
        for c in range(image.shape[1]):
            x = torch.stack([image[b, c][m], torch.ones(int(m.sum()))], 1)
            fixed[b, c][m] = x @ torch.linalg.lstsq(x, target[b, c][m][:, None]).solution[:, 0]
    touched = F.max_pool2d((cov > 0).float(), 3, 1, 1) > 0
    full = -F.max_pool2d(-(cov >= 1).float(), 3, 1, 1) > 0   # every neighbour fully covered
    band = (touched & ~full).expand_as(image)
    print(json.dumps({
        "prompt": prompt, "variant": variant, "seed": seed, "psnr": round(psnr(image, target), 2),
        "silhouette_iou_2d": round(float(both.sum() / (covered | opaque).sum()), 3),
        "rmse_inside": round(float((sq[both].mean() / 3) ** 0.5), 3),
        "error_share_on_silhouette_disagreement": round(float(sq[disagree].sum() / sq.sum()), 3),
        "psnr_after_colour_fit": round(psnr(fixed, target), 2),
        "edge_band_pixels": round(float(band[:, 0].float().mean()), 3),
        "error_share_on_edge_band": round(float(sq[band[:, :1]].sum() / sq.sum()), 3),
        "opacity_over_coverage": round(float(out.opacity.cpu().sum() / cov.sum()), 3),
        "psnr_edges_from_truth": round(psnr(torch.where(band, target, image), target), 2),
        "psnr_rest_from_truth": round(psnr(torch.where(band, image, target), target), 2),
    }))


if __name__ == "__main__":
    main()

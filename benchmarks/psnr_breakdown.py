"""Where the PSNR gap to the oracle is: silhouette or inside (docs/toy-prior.md, main table).

Trains one default run (seed 0) of a toy prompt with a method and, at the evaluation views, compares its
render with the truth: the 2D silhouette IoU (opacity > 0.5 against true coverage > 0.5), the RMSE where
both are opaque, the share of the squared error on pixels where the silhouettes disagree, and the PSNR
after fitting a gain and offset per image and channel on the overlap (what a global colour fix recovers).

    python benchmarks/psnr_breakdown.py "a red cube" paas      # prints one JSON line; oracle for the ceiling

(The table in docs/toy-prior.md was measured at the defaults of the time: guidance 3, no appearance polish.)
"""
import json
import sys

import torch

from sjc.cameras import eval_cameras
from sjc.config import RunConfig
from sjc.evaluate import psnr, variant_config
from sjc.toyworld import render_coverage, render_truth
from sjc.train import build_run, train

prompt, variant = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "paas"
run = train(build_run(variant_config(RunConfig(prompt="eval"), prompt, variant, 0)), None, progress=False)
obj = run.prior.truth(prompt)
cams, res = eval_cameras(run.cfg.camera.test_fov, run.cfg.camera.radius), run.resolution
with torch.no_grad():
    out = run.render(cams.to(run.device))
    image, opaque = run.prior.decode(out.image).cpu().clamp(-1, 1), out.opacity.cpu() > 0.5
target = render_truth(obj, cams, res, res)
covered = (1 - render_coverage(obj.shape, cams, res, res)[1]) > 0.5
both, disagree = covered & opaque, covered ^ opaque
sq = ((image - target) ** 2).sum(1, keepdim=True)
fixed = image.clone()
for b in range(image.shape[0]):
    m = both[b, 0]
    for c in range(image.shape[1]):
        x = torch.stack([image[b, c][m], torch.ones(int(m.sum()))], 1)
        fixed[b, c][m] = x @ torch.linalg.lstsq(x, target[b, c][m][:, None]).solution[:, 0]
print(json.dumps({
    "prompt": prompt, "variant": variant, "psnr": round(psnr(image, target), 2),
    "silhouette_iou_2d": round(float(both.sum() / (covered | opaque).sum()), 3),
    "rmse_inside": round(float((sq[both].mean() / 3) ** 0.5), 3),
    "error_share_on_silhouette_disagreement": round(float(sq[disagree].sum() / sq.sum()), 3),
    "psnr_after_colour_fit": round(psnr(fixed, target), 2),
}))

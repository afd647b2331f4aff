"""Where a run's solid differs from the truth, slice by slice along the up axis (docs/toy-prior.md, the cones).

Reads a finished `sjc generate` folder of a toy-world prompt and prints, for every horizontal slice of the
grid that holds either solid, the voxels of the truth and of the field's solid (the IoU's, `field_occupancy`)
and the false positives and negatives; then the totals as one JSON line.

    python benchmarks/occupancy_profile.py outputs/a-green-cone
"""
import json
import sys
from pathlib import Path

from sjc.evaluate import field_occupancy, iou
from sjc.pipeline import load_run
from sjc.toyworld import occupancy, voxel_centres

run = load_run(Path(sys.argv[1]))
obj = run.prior.truth(run.cfg.prompt)
n = run.field.grid_size
solid, truth = field_occupancy(run.field), occupancy(obj, n)   # (N, N, N) indexed [z, y, x]
heights = voxel_centres(n)[0, :, 0, 1]   # y of each slice
print("| slice | y | truth | field | false + | false − |\n|---|---|---|---|---|---|")
for i in range(n):
    t, f = truth[:, i, :], solid[:, i, :]
    if t.any() or f.any():
        print(f"| {i} | {float(heights[i]):+.3f} | {int(t.sum())} | {int(f.sum())} | {int((f & ~t).sum())} | {int((t & ~f).sum())} |")
print(json.dumps({"prompt": run.cfg.prompt, "iou": round(iou(solid, truth), 4), "truth": int(truth.sum()),
                  "field": int(solid.sum()), "false_pos": int((solid & ~truth).sum()),
                  "false_neg": int((truth & ~solid).sum())}))

"""Where a run's solid differs from the truth, slice by slice along the up axis (docs/toy-prior.md, the cones).

Reads a finished `sjc generate` folder of a toy-world prompt and prints, for every horizontal slice of the
grid that holds either solid, the voxels of the truth and of the field's solid (the IoU's, `field_occupancy`)
and the false positives and negatives; then the totals as one JSON line (for a mug, also split by its parts).

    python experiments/scripts/occupancy_profile.py outputs/a-green-cone
"""
import json
import sys
from pathlib import Path

from sjc.metrics import field_occupancy, iou
from sjc.pipeline import load_run
from sjc.toyworld import occupancy, voxel_centres

def main() -> None:
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
    fp, fn = solid & ~truth, truth & ~solid
    lowest = int(truth.any(dim=(0, 2)).nonzero().min())   # the lowest slice that holds the truth
    totals = {"prompt": run.cfg.prompt, "iou": round(iou(solid, truth), 4), "truth": int(truth.sum()),
              "field": int(solid.sum()), "false_pos": int(fp.sum()), "false_neg": int(fn.sum()),
              "false_pos_below_truth": int(fp[:, :lowest, :].sum())}
    if obj.shape == "mug":   # its parts (sjc.toyworld.sd_mug): the cavity, the handle (x > 0.28) and the wall
        c = voxel_centres(n).reshape(n, n, n, 3)
        x, y, z = c[..., 0], c[..., 1], c[..., 2]
        cavity, handle = ((x ** 2 + z ** 2).sqrt() < 0.22) & (y > -0.22), x > 0.28
        totals.update(false_pos_in_cavity=int((fp & cavity).sum()), false_pos_handle_side=int((fp & handle).sum()),
                      false_neg_handle=int((fn & handle).sum()), false_neg_body=int((fn & ~handle).sum()))
    print(json.dumps(totals))


if __name__ == "__main__":
    main()

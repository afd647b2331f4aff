"""The toy world's ground truth and the evaluation metrics."""
import math

import pytest
import torch

from sjc.cameras import orbit_cameras
from sjc.errors import SJCError
from sjc.evaluate import markdown_table, summarize
from sjc.metrics import field_occupancy, fine_iou, iou, occupancy_level, psnr, rotate_y
from sjc.field import VoxelField
from sjc.toyworld import (
    ALL_OBJECTS,
    COLOURS,
    SHAPES,
    ToyObject,
    occupancy,
    parse_prompt,
    render_truth,
    sd_box,
    trace,
    voxel_centres,
)


def test_catalogue_size():
    assert len(COLOURS) >= 8
    assert {"sphere", "cube", "cylinder", "cone", "torus", "cube_with_ball", "mug"} <= set(SHAPES)
    assert sum(o.asymmetric for o in ALL_OBJECTS) == 2 * len(COLOURS)


@pytest.mark.parametrize("prompt,view,shape,colour", [
    ("a red cube", None, "cube", "red"),
    ("front view of a red cube", "front", "cube", "red"),
    ("  Backside view of   a Blue Sphere ", "back", "sphere", "blue"),
    ("overhead view of a green mug", "overhead", "mug", "green"),
    ("a yellow cube with a ball on its front", None, "cube_with_ball", "yellow"),
    ("an orange cube with a ball", None, "cube_with_ball", "orange"),
    ("purple torus", None, "torus", "purple"),
])
def test_parse_prompt(prompt, view, shape, colour):
    assert parse_prompt(prompt) == (view, ToyObject(shape, colour))


@pytest.mark.parametrize("prompt", ["a photo of a cat", "a white cube", "a red pyramid", ""])
def test_parse_prompt_rejects_unknown(prompt):
    with pytest.raises(SJCError, match="not a toy-world prompt"):
        parse_prompt(prompt)


def test_occupancy_volumes():
    n = 64
    voxel = (2 / (n - 1)) ** 3
    sphere = occupancy(ToyObject("sphere", "red"), n).sum().item() * voxel
    assert sphere == pytest.approx(4 / 3 * math.pi * 0.42 ** 3, rel=0.05)
    cube = occupancy(ToyObject("cube", "red"), n).sum().item() * voxel
    assert cube == pytest.approx(0.64 ** 3, rel=0.1)
    torus = occupancy(ToyObject("torus", "red"), n).sum().item() * voxel
    assert torus == pytest.approx(2 * math.pi ** 2 * 0.32 * 0.13 ** 2, rel=0.1)


def test_truth_renders_colour_background_and_asymmetry():
    cams = orbit_cameras(torch.tensor([0.0, 90.0, 180.0]), torch.zeros(3), torch.full((3,), 50.0))
    img = render_truth(ToyObject("sphere", "red"), cams[0:1], 16, 16)
    assert img.shape == (1, 3, 16, 16)
    assert torch.allclose(img[0, :, 0, 0], torch.ones(3))          # white background in the corner
    centre = img[0, :, 8, 8]
    assert centre[0] > centre[1] + 0.3 and centre[0] > centre[2] + 0.3   # red object in the middle
    # The ball on the cube's front (+z) is seen on the left from azimuth 90 (camera at +x, right = −z).
    cb = render_truth(ToyObject("cube_with_ball", "blue"), cams, 32, 32)
    fg = (cb < 0.9).any(1)   # foreground pixels
    cols = fg[1].any(0).nonzero()
    centre_col = (cols.min() + cols.max()).float() / 2
    assert centre_col < 15.5   # the silhouette extends further to the left
    # The mug's handle (+x) is on the right from the front.
    mug = (render_truth(ToyObject("mug", "gray"), cams[0:1], 32, 32) < 0.9).any(1)[0]
    cols = mug.any(0).nonzero()
    assert (cols.min() + cols.max()).float() / 2 > 16.0


@pytest.mark.parametrize("shape", ["sphere", "mug", "cone"])
def test_trace_drops_rays_at_their_fixed_point_without_changing_any(shape):
    """Sphere tracing that stops stepping converged and escaped rays gives every ray's t of all `iters` steps, bit for bit."""
    from sjc.cameras import camera_rays
    obj = ToyObject(shape, "gray")
    cams = orbit_cameras(torch.tensor([0.0, 75.0, 200.0]), torch.tensor([-5.0, 30.0, 80.0]), torch.full((3,), 55.0))
    o, d = (x.reshape(-1, 3) for x in camera_rays(cams, 24, 24, 1))
    t = torch.zeros(o.shape[0])
    for _ in range(96):   # the plain loop: every ray, every step
        t = (t + 0.9 * obj.sdf(o + t[:, None] * d)).clamp(max=4.0)
    hit, t_fast = trace(obj, o, d)
    assert torch.equal(t_fast, t)
    assert torch.equal(hit, (obj.sdf(o + t[:, None] * d).abs() < 2e-3) & (t < 4.0))
    assert 0 < hit.sum() < hit.numel()   # the views hold both object and background


def test_iou_psnr_and_rotation():
    a = torch.zeros(4, 4, 4, dtype=torch.bool)
    b = a.clone()
    a[:2], b[1:3] = True, True
    assert iou(a, b) == pytest.approx(1 / 3)
    x = torch.zeros(1, 3, 4, 4)
    assert psnr(x, x + 0.2) == pytest.approx(10 * math.log10(4 / 0.04))
    obj = ToyObject("cube_with_ball", "red")
    truth = occupancy(obj, 32)
    turned = rotate_y(truth, 90.0)
    # Turning by +90° about y carries the ball from the front (+z) to the right (+x).
    assert turned[15, 15, 22] and not truth[15, 15, 22]
    assert truth[22, 15, 15] and not turned[22, 15, 15]
    assert iou(rotate_y(turned, -90.0), truth) > iou(turned, truth) + 0.05
    assert occupancy_level(48) == pytest.approx(0.2 * 47 / 2)


def _sdf_field(sdf, n: int = 48) -> VoxelField:
    """A field whose solid is {sdf < 0}: raw density linear in the SDF, at the surface level where it is 0."""
    f = VoxelField(n, 3)
    with torch.no_grad():
        f.density_raw[0, 0] = -200 * sdf(voxel_centres(n)) + math.log(math.expm1(occupancy_level(n))) - f.density_shift
    return f


@pytest.mark.parametrize("shape,sdf,size,true_size", [
    ("sphere", lambda p: p.norm(dim=-1) - 0.40, 0.40, 0.42),
    ("cube", lambda p: sd_box(p, (0.30, 0.30, 0.30)), 0.30, 0.32),
])
def test_fine_iou_measures_the_volumes(shape, sdf, size, true_size):
    """A solid nested in the truth has IoU (size / true size)³; the fine IoU finds it within 0.02."""
    obj = ToyObject(shape, "red")
    field = _sdf_field(sdf)
    expected = (size / true_size) ** 3
    assert fine_iou(field, obj) == pytest.approx(expected, abs=0.02)
    grid = iou(field_occupancy(field), occupancy(obj, 48))
    if shape == "cube":
        # The cube's faces (±0.32) lie 0.001 outside a plane of voxel centres (±0.319): on the field's own grid
        # the truth has a whole slab more per face, and the IoU reads 0.67 for 0.82.
        assert grid < expected - 0.1
    exact = _sdf_field(obj.sdf)
    assert fine_iou(exact, obj) > 0.99 and field_occupancy(exact, supersample=4).shape == (189, 189, 189)


def test_eval_tables_show_the_fine_iou_only_where_every_row_has_it():
    rows = [{"prompt": "a red cube", "variant": "paas", "seed": s, "seconds": 1.0, "iou": 0.8, "iou_fine": 0.7 + s / 10,
             "psnr": 20.0, "iou_rot": 0.8, "psnr_rot": 20.0} for s in (0, 1)]
    summary = summarize(rows)
    assert summary[0]["iou_fine"] == pytest.approx(0.75) and summary[0]["iou_fine_std"] == pytest.approx(0.05)
    table = markdown_table(summary, ["paas"])
    assert "| IoU, 4× finer |" in table and "| 0.750 ± 0.050 |" in table
    mean_row = next(line for line in table.splitlines() if line.startswith("| paas |"))
    assert mean_row.split(" | ")[2] == "0.750" and table.splitlines()[-1].startswith("± is the population")
    old = [{k: v for k, v in r.items() if k != "iou_fine"} for r in rows]   # rows written before the fine IoU
    assert "iou_fine" not in summarize(old)[0] and "finer" not in markdown_table(summarize(old), ["paas"])

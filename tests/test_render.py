"""Field, renderer, cameras and regularisers: values, invariants and gradient directions."""
import math

import pytest
import torch

from sjc.cameras import (camera_rays, eval_cameras, orbit_cameras, sample_train_cameras, spiral_cameras,
                         view_label)
from sjc.config import CameraConfig
from sjc.field import VoxelField
from sjc.regularizers import center_depth_loss, emptiness_loss, emptiness_weight
from sjc.render import render
from sjc.volrend import compositing_weights, ray_box_intersect, sample_step


def one_cam(az=0.0, el=0.0, fov=60.0):
    return orbit_cameras(torch.tensor([az]), torch.tensor([el]), torch.tensor([fov]))


def test_camera_convention():
    cam = one_cam(0.0, 0.0)
    assert torch.allclose(cam.pos[0], torch.tensor([0.0, 0.0, 1.5]), atol=1e-6)
    right, up, back = cam.rot[0].t()
    assert torch.allclose(right, torch.tensor([1.0, 0, 0]), atol=1e-6)   # +x appears on the right
    assert torch.allclose(up, torch.tensor([0.0, 1, 0]), atol=1e-6)
    side = one_cam(90.0, 0.0)
    assert torch.allclose(side.pos[0], torch.tensor([1.5, 0.0, 0.0]), atol=1e-6)
    # Rotations are orthonormal, also straight overhead.
    for cam in (one_cam(37.0, 20.0), one_cam(10.0, 90.0), one_cam(200.0, -6.0)):
        r = cam.rot[0]
        assert torch.allclose(r @ r.t(), torch.eye(3), atol=1e-5)
        assert torch.allclose(r[:, 2], cam.pos[0] / cam.pos[0].norm(), atol=1e-5)


def test_rays_point_through_pixels():
    cam = one_cam(0.0, 0.0, 90.0)
    o, d = camera_rays(cam, 4, 4)
    assert o.shape == d.shape == (1, 4, 4, 3)
    assert torch.allclose(d.norm(dim=-1), torch.ones(1, 4, 4))
    # Top-left pixel points up and left; fov 90 → tan 45 = 1 → pixel centre at ±0.75.
    assert torch.allclose(d[0, 0, 0], torch.nn.functional.normalize(torch.tensor([-0.75, 0.75, -1.0]), dim=0), atol=1e-6)


def test_view_labels_by_quadrant():
    assert view_label(0, 0) == view_label(44, 10) == view_label(316, 0) == "front"
    assert view_label(90, 0) == view_label(270, 0) == view_label(46, 0) == "side"
    assert view_label(180, 30) == "back"
    assert view_label(180, 60) == "overhead"


def test_training_camera_distribution():
    cfg = CameraConfig(fov_min=40.0, fov_max=70.0)
    g = torch.Generator().manual_seed(0)
    cams = sample_train_cameras(4000, cfg, g)
    assert cams.elevation.min() >= -6.0 - 1e-4 and cams.elevation.max() <= 90.0
    assert 40.0 <= math.degrees(cams.fov.min()) and math.degrees(cams.fov.max()) <= 70.0
    assert torch.allclose(cams.pos.norm(dim=-1), torch.full((4000,), 1.5), atol=1e-5)
    # Uniform on the sphere's area: sin(elevation) is uniform on [sin(−6°), 1].
    s = torch.sin(torch.deg2rad(cams.elevation))
    assert s.mean().item() == pytest.approx((math.sin(math.radians(-6)) + 1) / 2, abs=0.02)
    cfg.fov_min = cfg.fov_max = 55.0
    assert torch.allclose(torch.rad2deg(sample_train_cameras(10, cfg, g).fov), torch.full((10,), 55.0))


def test_spiral_and_eval_cameras():
    sp = spiral_cameras(100)
    assert len(sp) == 100 and sp.elevation[0] > sp.elevation[-1]
    assert len(sp[-1]) == 1 and sp[-1].elevation.item() == sp.elevation[-1].item()
    assert len(eval_cameras()) == 16


def test_ray_box_intersection():
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    tn, tf = ray_box_intersect(o, d)
    assert tn.tolist() == pytest.approx([2.0, 0.0, 0.0])
    assert tf[:2].tolist() == pytest.approx([4.0, 1.0])
    assert tf[2] <= tn[2]   # a miss has an empty interval


def test_compositing_weights_match_closed_form():
    dens = torch.tensor([[0.0, 2.0, 2.0, 5.0]])
    w = compositing_weights(dens * 0.1)   # optical depths τ = σ·δ
    alpha = 1 - torch.exp(-dens * 0.1)
    trans = torch.cumprod(torch.cat([torch.ones(1, 1), 1 - alpha[:, :-1]], 1), 1)
    assert torch.allclose(w, alpha * trans, atol=1e-7)
    assert w.sum() == pytest.approx(1 - math.exp(-0.9), abs=1e-6)


def test_constant_density_opacity_and_background():
    field = VoxelField(8, 3, pixel_space=True, background_init=1.0)
    out = render(field, one_cam(0.0, 0.0, 1.0), 3, 3)
    # Centre ray crosses the box along z over length 2: opacity = 1 − exp(−σ·n·δ) for the valid samples.
    sigma0 = torch.nn.functional.softplus(torch.tensor(-1.0)).item()
    step = sample_step(8, 0.5)
    n_valid = (out.weights.view(3, 3, -1)[1, 1] > 0).sum().item()
    assert out.opacity[0, 0, 1, 1].item() == pytest.approx(1 - math.exp(-sigma0 * step * n_valid), rel=1e-5)
    assert n_valid * step == pytest.approx(2.0, abs=step)
    # Grey field (colour 0) over a white background: image = 1 − opacity.
    assert torch.allclose(out.image[0, :, 1, 1], (1 - out.opacity[0, 0, 1, 1]).expand(3), atol=2e-3)
    assert (out.depth > 0).all() and (out.depth <= 10).all()


def test_render_gradients_reach_every_parameter_group():
    torch.manual_seed(0)
    field = VoxelField(10, 3)
    with torch.no_grad():
        field.appearance_raw.normal_()
        field.density_raw.normal_()   # d_scale only matters where raw density is non-zero
    out = render(field, one_cam(30.0, 20.0), 8, 8)
    (out.image.sum() + out.depth.sum()).backward()
    for p in (field.density_raw, field.appearance_raw, field.d_scale, field.background_raw):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_subpixel_render_averages_finer_rays():
    torch.manual_seed(1)
    field = VoxelField(10, 3)
    with torch.no_grad():
        field.density_raw.normal_(0, 3)
    cam = one_cam(10.0, 10.0)
    fine = render(field, cam, 8, 8, subpixel=2)
    manual = torch.nn.functional.avg_pool2d(render(field, cam, 16, 16).image, 2)
    assert torch.allclose(fine.image, manual, atol=1e-5)


def test_emptiness_loss_and_schedule():
    w = torch.tensor([[0.0, 0.5, 0.0]])
    valid = torch.tensor([[True, True, False]])
    assert emptiness_loss(w * valid, valid.sum(), 10.0).item() == pytest.approx(math.log(6.0) / 2)
    assert emptiness_loss(torch.zeros(2, 3), torch.tensor(6)).item() == 0.0
    assert emptiness_weight(2.0, 49, 50, 20.0) == 2.0
    assert emptiness_weight(2.0, 50, 50, 20.0) == 40.0


def blob_field(n, centre, radius=0.25, value=6.0):
    field = VoxelField(n, 3)
    c = torch.linspace(-1, 1, n)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    d = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2).sqrt()
    with torch.no_grad():
        field.density_raw[0, 0] = torch.where(d < radius, value, -4.0)
    return field, (x, y, z)


def test_center_depth_loss_is_finite_and_pulls_density_to_the_centre():
    cam = one_cam(0.0, 0.0, 60.0)
    # Finite for an empty and for a fully opaque field, at any resolution.
    for v in (-20.0, 20.0):
        f = VoxelField(12, 3)
        with torch.no_grad():
            f.density_raw.fill_(v)
        for res in (1, 2, 4, 16):
            assert torch.isfinite(center_depth_loss(render(f, cam, res, res).depth))
    # An object off to the side: descending the loss adds density on central rays and removes the side blob.
    field, (x, y, z) = blob_field(24, (0.85, 0.0, 0.0), radius=0.15)
    loss = center_depth_loss(render(field, cam, 16, 16).depth)
    loss.backward()
    descent = -field.density_raw.grad[0, 0]
    central = (x.abs() < 0.1) & (y.abs() < 0.1)
    blob = ((x - 0.85) ** 2 + y ** 2 + z ** 2).sqrt() < 0.15
    assert descent[central].sum() > 0
    assert descent[blob].sum() < 0


def test_background_has_no_seam_behind_the_object():
    field = VoxelField(4, 3)
    with torch.no_grad():
        field.background_raw.normal_()
    # Directions just either side of azimuth 180° (looking along −z) get (almost) the same background.
    a, b = math.radians(179.5), math.radians(-179.5)
    d = torch.tensor([[math.sin(a), 0.0, math.cos(a)], [math.sin(b), 0.0, math.cos(b)]])
    bg = field.background(d)
    assert torch.allclose(bg[0], bg[1], atol=0.05)


def test_resample_keeps_the_field():
    field, _ = blob_field(12, (0.0, 0.0, 0.0), radius=0.6, value=3.0)
    before = field.density(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]]))
    field.resample(23)
    assert field.grid_size == 23
    after = field.density(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]]))
    assert torch.allclose(before, after, rtol=0.05)


@pytest.mark.parametrize("renderer", ["dense", "packed"])
def test_render_gradient_matches_finite_differences(renderer):
    """The whole image (compositing, colour and the background blend) differentiated by autograd, checked against
    finite differences in float64 with respect to the raw density."""
    from sjc.cameras import Cameras

    torch.manual_seed(0)
    field = VoxelField(4, 3).double()
    with torch.no_grad():
        for p in (field.appearance_raw, field.density_raw, field.background_raw):
            p.normal_()
    c = one_cam(30.0, 20.0)
    cams = Cameras(*(getattr(c, k).double() for k in ("rot", "pos", "fov", "azimuth", "elevation")))

    def image(raw):
        kept = field.density_raw
        field._parameters["density_raw"] = raw
        try:
            return render(field, cams, 2, 2, weight_threshold=0.0, renderer=renderer).image
        finally:
            field._parameters["density_raw"] = kept

    raw = field.density_raw.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(image, (raw,), eps=1e-6, atol=1e-6)

"""Ground-truth metrics in the toy world: occupancy IoU, held-out-view PSNR, best rotation about y."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .cameras import eval_cameras, orbit_cameras
from .toyworld import ToyObject, occupancy, render_truth

OCCUPANCY_OPTICAL_DEPTH = 0.2   # a voxel is opaque where it alone absorbs 1 − e^−0.2 ≈ 18% of the light
ROTATIONS = [float(a) for a in range(0, 360, 10)]
# The fine IoU samples both solids 4× finer than the field's grid (189 points per side at N = 48): flat faces
# that fall near a plane of voxel centres (the cube's at ±0.32, the cone's base at −0.36 against centres at
# ±0.319 and −0.362) then weigh a quarter of a slab, not a whole one.
FINE_SUPERSAMPLE = 4


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean grids."""
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return inter / union if union else 1.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of images in [-1, 1] (peak-to-peak range 2)."""
    mse = F.mse_loss(a.clamp(-1, 1), b.clamp(-1, 1)).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def rotate_y(grid: torch.Tensor, degrees: float) -> torch.Tensor:
    """Resample an (N, N, N) [z, y, x] grid rotated by `degrees` about the vertical axis (nearest-neighbour)."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    n = grid.shape[0]
    lin = torch.linspace(-1, 1, n, device=grid.device)
    z, y, x = torch.meshgrid(lin, lin, lin, indexing="ij")
    # The rotated grid at p holds the original at R⁻¹p (R rotates by +a about y: x' = c·x + s·z, z' = −s·x + c·z).
    xs, zs = c * x - s * z, s * x + c * z
    pts = torch.stack([xs, y, zs], -1)[None]
    out = F.grid_sample(grid[None, None].float(), pts, mode="nearest", padding_mode="zeros", align_corners=True)
    return out[0, 0] > 0.5 if grid.dtype == torch.bool else out[0, 0]


def occupancy_level(grid_size: int, optical_depth: float = OCCUPANCY_OPTICAL_DEPTH) -> float:
    """The density at which one voxel has the given optical depth: the surface level for IoU and meshes."""
    return optical_depth * (grid_size - 1) / 2.0


def fine_grid_size(grid_size: int, supersample: int) -> int:
    """Points per side of a grid `supersample` times finer than the field's, the voxel centres among them."""
    return (grid_size - 1) * supersample + 1


@torch.no_grad()
def field_occupancy(field, level: float | None = None, supersample: int = 1) -> torch.Tensor:
    """The field's solid: points denser than the surface level, with enclosed cavities filled.

    supersample = 1 samples the voxel centres; k > 1 samples a grid k times finer (`fine_grid_size`), the
    density trilinear between the centres as the renderer sees it.
    The optimisation only shapes what is visible, so the inside of an object may keep its initial low
    density; the solid is what the opaque surface encloses.
    """
    from scipy.ndimage import binary_fill_holes

    level = occupancy_level(field.grid_size) if level is None else level
    raw = field.density_raw
    if supersample > 1:
        m = fine_grid_size(field.grid_size, supersample)
        raw = F.interpolate(raw, size=(m, m, m), mode="trilinear", align_corners=True)
    occ = (field.activate_density(raw[0, 0]) > level).cpu().numpy()
    return torch.from_numpy(binary_fill_holes(occ))


@torch.no_grad()
def fine_iou(field, obj: ToyObject, supersample: int = FINE_SUPERSAMPLE) -> float:
    """IoU of the field's solid and the true object, both sampled `supersample` times finer than the field's grid."""
    return iou(field_occupancy(field, supersample=supersample),
               occupancy(obj, fine_grid_size(field.grid_size, supersample)))


@torch.no_grad()
def evaluate_field(run, obj: ToyObject, rotations: bool = True) -> dict:
    """IoU against the voxelised truth (on the field's grid and FINE_SUPERSAMPLE× finer) and PSNR at the fixed
    held-out views; also at the best y-rotation."""
    field = run.field
    occ = field_occupancy(field).cpu()
    truth = occupancy(obj, field.grid_size)
    cams = eval_cameras(run.cfg.camera.test_fov, run.cfg.camera.radius)
    res = run.resolution
    target = render_truth(obj, cams, res, res)
    image = run.prior.decode(run.render(cams.to(run.device)).image).cpu()
    metrics = {"iou": iou(occ, truth), "iou_fine": fine_iou(field, obj), "psnr": psnr(image, target)}
    if rotations:
        # Rotating the field by a matches the truth when the field holds the object turned by −a.
        best = max(ROTATIONS, key=lambda a: iou(rotate_y(occ, a), truth))
        metrics["iou_rot"] = iou(rotate_y(occ, best), truth)
        metrics["best_rotation"] = best
        # Seeing the field from azimuth φ + (−best) equals seeing the rotated field from φ.
        rc = orbit_cameras(cams.azimuth - best, cams.elevation, torch.rad2deg(cams.fov), run.cfg.camera.radius)
        metrics["psnr_rot"] = psnr(run.prior.decode(run.render(rc.to(run.device)).image).cpu(), target)
    return metrics

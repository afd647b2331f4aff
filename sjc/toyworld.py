"""The toy world: analytic coloured objects with known 3D truth, rendered by sphere tracing.

Everything needed to rebuild the ground truth is written in docs/toyworld.md: shapes and sizes
(signed distance functions in world units), colours, light, background and camera convention
(the same as sjc.cameras: y up, object at the origin, azimuth 0 sees the object's front from +z).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .cameras import VIEW_SCHEMES, Cameras, ViewScheme, camera_rays, orbit_cameras, view_label
from .errors import SJCError

# Linear RGB albedo in [0, 1].
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.50, 0.05),
    "yellow": (0.92, 0.85, 0.10),
    "green": (0.10, 0.70, 0.15),
    "cyan": (0.10, 0.80, 0.85),
    "blue": (0.10, 0.20, 0.90),
    "purple": (0.50, 0.15, 0.75),
    "pink": (0.95, 0.45, 0.70),
    "brown": (0.50, 0.30, 0.12),
    "gray": (0.50, 0.50, 0.50),
}

LIGHT_DIR = (0.3, 0.8, 0.5)   # direction towards the light, fixed to the world (normalised)
AMBIENT = 0.35                # shade = albedo · (AMBIENT + (1 − AMBIENT) · max(0, n·l))
BACKGROUND = 1.0              # white, in [0, 1]


def _len(v: torch.Tensor) -> torch.Tensor:
    return v.norm(dim=-1)


def sd_sphere(p, r, c=(0.0, 0.0, 0.0)):
    """Sphere of radius r centred at c."""
    return _len(p - p.new_tensor(c)) - r


def sd_box(p, b, c=(0.0, 0.0, 0.0)):
    """Axis-aligned box with half-sizes b centred at c."""
    q = (p - p.new_tensor(c)).abs() - p.new_tensor(b)
    return _len(q.clamp_min(0)) + q.amax(-1).clamp_max(0)


def sd_cylinder_y(p, r, h, cy=0.0):
    """Capped cylinder around the y axis: radius r, half-height h, centred at y = cy."""
    dx = _len(p[..., [0, 2]]) - r
    dy = (p[..., 1] - cy).abs() - h
    d = torch.stack([dx, dy], -1)
    return _len(d.clamp_min(0)) + d.amax(-1).clamp_max(0)


def sd_cone_y(p, r, h):
    """Cone around the y axis: base radius r at y = −h, apex at y = +h (a distance bound)."""
    half_angle = math.atan2(r, 2 * h)
    radius_at_y = r * (h - p[..., 1]) / (2 * h)
    side = (_len(p[..., [0, 2]]) - radius_at_y) * math.cos(half_angle)
    return torch.maximum(side, (p[..., 1]).abs() - h)


def sd_torus_y(p, big_r, small_r, c=(0.0, 0.0, 0.0)):
    """Torus lying in the xz plane (axis y): ring radius big_r, tube radius small_r."""
    q = p - p.new_tensor(c)
    a = _len(q[..., [0, 2]]) - big_r
    return torch.sqrt(a * a + q[..., 1] ** 2) - small_r


def sd_torus_z(p, big_r, small_r, c=(0.0, 0.0, 0.0)):
    """Torus standing in the xy plane (axis z)."""
    q = p - p.new_tensor(c)
    a = _len(q[..., [0, 1]]) - big_r
    return torch.sqrt(a * a + q[..., 2] ** 2) - small_r


def sd_cube_with_ball(p):
    """A cube (half-size 0.3) with a ball (radius 0.16) on its front face (+z)."""
    return torch.minimum(sd_box(p, (0.3, 0.3, 0.3)), sd_sphere(p, 0.16, (0.0, 0.0, 0.38)))


def sd_mug(p):
    """A mug: open-topped hollow cylinder (radius 0.28, half-height 0.3) with its handle on its right (+x)."""
    outer = sd_cylinder_y(p, 0.28, 0.3)
    inner = sd_cylinder_y(p, 0.22, 0.3, cy=0.08)   # cavity from y = −0.22 up through the open top
    body = torch.maximum(outer, -inner)
    handle = torch.maximum(sd_torus_z(p, 0.14, 0.045, (0.28, 0.0, 0.0)), 0.28 - p[..., 0])
    return torch.minimum(body, handle)


# name → (signed distance function, caption noun phrase, has a clear front)
SHAPES: dict[str, tuple[Callable, str, bool]] = {
    "sphere": (lambda p: sd_sphere(p, 0.42), "sphere", False),
    "cube": (lambda p: sd_box(p, (0.32, 0.32, 0.32)), "cube", False),
    "cylinder": (lambda p: sd_cylinder_y(p, 0.3, 0.35), "cylinder", False),
    "cone": (lambda p: sd_cone_y(p, 0.38, 0.36), "cone", False),
    "torus": (lambda p: sd_torus_y(p, 0.32, 0.13), "torus", False),
    "cube_with_ball": (sd_cube_with_ball, "cube with a ball on its front", True),
    "mug": (sd_mug, "mug", True),
}


@dataclass(frozen=True)
class ToyObject:
    """One object of the toy world: a shape in a colour."""
    shape: str
    colour: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {SHAPES[self.shape][1]}"

    @property
    def asymmetric(self) -> bool:
        return SHAPES[self.shape][2]

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        return SHAPES[self.shape][0](p)

    @property
    def albedo(self) -> tuple[float, float, float]:
        return COLOURS[self.colour]


ALL_OBJECTS = [ToyObject(s, c) for s in SHAPES for c in COLOURS]
# Every view prefix any scheme writes, longest first ('front left view of' before 'front view of').
_PREFIXES = dict(sorted({ViewScheme.prefix(v).strip(): v for vs in VIEW_SCHEMES.values() for v in vs.labels}.items(),
                        key=lambda kv: -len(kv[0])))


def parse_prompt(prompt: str) -> tuple[Optional[str], ToyObject]:
    """Split '[front view of] a red cube' into (view label or None, object); SJCError if not a toy prompt."""
    text = " ".join(prompt.lower().strip().split())
    view = None
    for prefix, label in _PREFIXES.items():
        if text.startswith(prefix + " "):
            view, text = label, text[len(prefix) + 1:]
            break
    for obj in ALL_OBJECTS:
        if text == obj.caption or text == obj.caption.removeprefix("a "):
            return view, obj
    # Be lenient about articles and the short name "cube with a ball".
    m = re.fullmatch(r"(?:an? )?(\w+) (.+)", text)
    if m and m.group(1) in COLOURS:
        noun = m.group(2)
        for shape, (_, caption, _) in SHAPES.items():
            if noun in (caption, shape.replace("_", " "), caption.split(" on ")[0]):
                return view, ToyObject(shape, m.group(1))
    raise SJCError(f"{prompt!r} is not a toy-world prompt: use 'a <colour> <shape>' with colour one of "
                   f"{', '.join(COLOURS)} and shape one of {', '.join(s[1] for s in SHAPES.values())}")


def trace(obj: ToyObject, o: torch.Tensor, d: torch.Tensor, iters: int = 96, t_max: float = 4.0):
    """Sphere-trace rays (R, 3) against the object's SDF → (hit mask, hit distance).

    A ray whose step leaves t unchanged has reached a fixed point (t alone decides its next step), so it is dropped
    from the loop: the result is the same as stepping every ray `iters` times, at a fraction of the cost.
    """
    t = torch.zeros(o.shape[0], device=o.device)
    active = torch.arange(o.shape[0], device=o.device)
    for _ in range(iters):
        ta = t[active]
        tn = (ta + 0.9 * obj.sdf(o[active] + ta[:, None] * d[active])).clamp(max=t_max)
        t[active] = tn
        active = active[tn != ta]
        if active.numel() == 0:
            break
    hit = obj.sdf(o + t[:, None] * d).abs() < 2e-3
    return hit & (t < t_max), t


def normals(obj: ToyObject, p: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Unit surface normals by central differences of the SDF."""
    e = torch.eye(3, device=p.device) * eps
    g = torch.stack([obj.sdf(p + e[i]) - obj.sdf(p - e[i]) for i in range(3)], -1)
    return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def render_coverage(shape: str, cams: Cameras, height: int, width: int, supersample: int = 2,
                    chunk: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour-free render of a shape: (shaded coverage, background coverage), each (B, 1, H, W) in [0, 1].

    Any colour's image is linear in these two: rgb = albedo · shaded + BACKGROUND · background.
    """
    obj = ToyObject(shape, "gray")
    o, d = camera_rays(cams, height, width, supersample)
    shape_ = o.shape[:-1]
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    light = torch.tensor(LIGHT_DIR, device=o.device)
    light = light / light.norm()
    shaded = torch.zeros(o.shape[0], device=o.device)
    bg = torch.ones(o.shape[0], device=o.device)
    for i in range(0, o.shape[0], chunk):
        oc, dc = o[i:i + chunk], d[i:i + chunk]
        hit, t = trace(obj, oc, dc)
        p = oc[hit] + t[hit, None] * dc[hit]
        shaded[i:i + chunk][hit] = AMBIENT + (1 - AMBIENT) * (normals(obj, p) @ light).clamp_min(0)
        bg[i:i + chunk][hit] = 0.0
    out = torch.stack([shaded, bg], -1).view(*shape_, 2).permute(0, 3, 1, 2)
    out = torch.nn.functional.avg_pool2d(out, supersample) if supersample > 1 else out
    return out[:, :1], out[:, 1:]


def colourise(shaded: torch.Tensor, background: torch.Tensor, albedo: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] from a coverage render and albedos (B, 3) (or one (3,) for all)."""
    albedo = albedo.view(-1, 3, 1, 1)
    return (albedo * shaded + BACKGROUND * background) * 2 - 1


@torch.no_grad()
def render_truth(obj: ToyObject, cams: Cameras, height: int, width: int, supersample: int = 2,
                 chunk: int = 1 << 16) -> torch.Tensor:
    """Analytic render of the object (B, 3, H, W) in [-1, 1]: Lambert + ambient, white background."""
    shaded, bg = render_coverage(obj.shape, cams, height, width, supersample, chunk)
    return colourise(shaded, bg, torch.tensor(obj.albedo, device=shaded.device))


def voxel_centres(n: int, device="cpu") -> torch.Tensor:
    """World positions (N, N, N, 3) of the field's voxel centres, indexed [z, y, x] like the density grid."""
    c = torch.linspace(-1, 1, n, device=device)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([x, y, z], -1)


@torch.no_grad()
def occupancy(obj: ToyObject, n: int, device="cpu") -> torch.Tensor:
    """The true object voxelised on the field's grid: (N, N, N) bool, SDF < 0 at voxel centres."""
    return obj.sdf(voxel_centres(n, device)) < 0


# The closed-form prior's image set: views covering the training camera distribution.
SET_AZIMUTHS = [float(a) for a in range(0, 360, 10)]
SET_ELEVATIONS = [-5.0, 10.0, 25.0, 40.0, 55.0, 70.0, 85.0]
SET_FOV = 50.0


def image_set_cameras(radius: float = 1.5, device="cpu") -> Cameras:
    """All (azimuth, elevation) combinations of the image set, at the set's fixed FoV."""
    grid = torch.tensor([(a, e, SET_FOV) for a in SET_AZIMUTHS for e in SET_ELEVATIONS], device=device)
    return orbit_cameras(grid[:, 0], grid[:, 1], grid[:, 2], radius)


def image_set(obj: ToyObject, resolution: int, device="cpu") -> tuple[torch.Tensor, list[str]]:
    """Rendered views of one object (M, 3, H, W) with their view labels."""
    cams = image_set_cameras(device=device)
    imgs = render_truth(obj, cams, resolution, resolution)
    labels = [view_label(float(a), float(e)) for a, e in zip(cams.azimuth, cams.elevation)]
    return imgs, labels

"""Cameras: the training distribution, view labels, the spiral test path and evaluation views.

Convention (shared with the toy world): y is up, the object sits at the origin, and the camera at
azimuth 0 looks at the object's front from +z; azimuth 90 looks from +x (the object's right side as
seen from the front). Cameras look along their local -z with +y up (OpenGL style).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass
class Cameras:
    """A batch of pinhole cameras: camera-to-world rotations, positions and vertical field of view."""
    rot: torch.Tensor      # (B, 3, 3), columns = right, up, back (-forward)
    pos: torch.Tensor      # (B, 3)
    fov: torch.Tensor      # (B,) radians
    azimuth: torch.Tensor  # (B,) degrees in [0, 360)
    elevation: torch.Tensor  # (B,) degrees

    def __len__(self) -> int:
        return self.pos.shape[0]

    def to(self, device) -> "Cameras":
        """The same cameras on `device` (copied without blocking the host)."""
        return Cameras(*(t.to(device, non_blocking=True) for t in (self.rot, self.pos, self.fov, self.azimuth, self.elevation)))

    def __getitem__(self, i) -> "Cameras":
        if isinstance(i, int):
            i = i % len(self)
        sl = slice(i, i + 1) if isinstance(i, int) else i
        return Cameras(self.rot[sl], self.pos[sl], self.fov[sl], self.azimuth[sl], self.elevation[sl])


def orbit_cameras(azimuth: torch.Tensor, elevation: torch.Tensor, fov: torch.Tensor,
                  radius: float = 1.5) -> Cameras:
    """Cameras on a sphere of `radius` looking at the origin (angles in degrees)."""
    az, el = torch.deg2rad(azimuth), torch.deg2rad(elevation)
    pos = radius * torch.stack([torch.sin(az) * torch.cos(el), torch.sin(el), torch.cos(az) * torch.cos(el)], -1)
    fwd = -pos / pos.norm(dim=-1, keepdim=True)
    # Up vector: world y, except near the poles where the azimuth decides (continuous in azimuth).
    world_up = torch.tensor([0.0, 1.0, 0.0], device=pos.device, dtype=pos.dtype).expand_as(pos)
    alt_up = torch.stack([-torch.sin(az), torch.zeros_like(az), -torch.cos(az)], -1) * torch.sign(el).unsqueeze(-1)
    up0 = torch.where((el.abs() > math.radians(89.9)).unsqueeze(-1), alt_up, world_up)
    right = torch.linalg.cross(fwd, up0)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(right, fwd)
    rot = torch.stack([right, up, -fwd], -1)
    return Cameras(rot, pos, torch.deg2rad(fov), torch.remainder(azimuth, 360.0), elevation)


def sample_train_cameras(n: int, cfg, generator: torch.Generator, device="cpu") -> Cameras:
    """The reference training distribution: uniform azimuth, elevation uniform on the sphere's area, FoV uniform."""
    u = torch.rand(3, n, generator=generator, device=device)
    az = 360.0 * u[0]
    s_lo, s_hi = math.sin(math.radians(cfg.elev_min)), math.sin(math.radians(cfg.elev_max))
    el = torch.rad2deg(torch.asin(s_lo + (s_hi - s_lo) * u[1]))
    fov = cfg.fov_min + (cfg.fov_max - cfg.fov_min) * u[2]
    return orbit_cameras(az, el, fov, cfg.radius)


OVERHEAD_ELEVATION = 42.0


def _sector(azimuth, n: int):
    """Which of n equal azimuth sectors (the first centred on 0°) holds each angle in degrees (float or tensor)."""
    return ((azimuth + 180.0 / n) % 360.0) // (360.0 / n)


@dataclass(frozen=True)
class ViewScheme:
    """How a camera becomes a view prompt: equal azimuth sectors (the first centred on 0°), overhead above ~42°."""
    name: str
    sides: tuple[str, ...]      # label of each azimuth sector below the overhead band, from azimuth 0 on
    overhead: tuple[str, ...]   # label of each azimuth sector of the overhead band
    # Optional elevation words: (upper edge in degrees, word) for the side ring, lowest band first (above the last
    # edge: no word), and (lower edge, word) for the top of the overhead ring ('low front view of', 'top overhead
    # back view of'), so the label also pins down the camera's height.
    side_bands: tuple[tuple[float, str], ...] = ()
    top_band: tuple[float, str] | None = None

    def _rings(self) -> tuple[list[str], list[str]]:
        """Every side label (band-major: each band's sectors, then the unbanded ones) and every overhead label."""
        sides = [f"{w} {x}" for _, w in self.side_bands for x in self.sides] + list(self.sides)
        top = [f"{self.top_band[1]} {x}" for x in self.overhead] if self.top_band else []
        return sides, list(self.overhead) + top

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """Every distinct label, in order of first appearance (the caption order of a trained prior)."""
        return tuple(dict.fromkeys([*self.sides, *self.overhead, *(v for ring in self._rings() for v in ring)]))

    def label(self, azimuth: float, elevation: float) -> str:
        """The label of one camera (angles in degrees)."""
        if elevation > OVERHEAD_ELEVATION:
            ring, word = self.overhead, self.top_band[1] if self.top_band and elevation > self.top_band[0] else ""
        else:
            ring, word = self.sides, next((w for edge, w in self.side_bands if elevation < edge), "")
        side = ring[int(_sector(azimuth, len(ring))) % len(ring)]
        return f"{word} {side}" if word else side

    @cached_property
    def _lookup(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_rings` as indices into `labels`, and the side bands' upper edges (built once, not per training step)."""
        sides, overhead = (torch.tensor([self.labels.index(v) for v in ring]) for ring in self._rings())
        return sides, overhead, torch.tensor([e for e, _ in self.side_bands])

    def index(self, azimuth: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
        """Index into `labels` of each camera (vectorised)."""
        sides, overhead, edges = self._lookup
        n, m = len(self.sides), len(self.overhead)
        side_band = torch.bucketize(elevation, edges, right=True)
        side = sides[side_band * n + _sector(azimuth, n).long().clamp(0, n - 1)]
        top = (elevation > self.top_band[0]).long() if self.top_band else torch.zeros_like(elevation, dtype=torch.long)
        over = overhead[top * m + _sector(azimuth, m).long().clamp(0, m - 1)]
        return torch.where(elevation > OVERHEAD_ELEVATION, over, side)

    @staticmethod
    def prefix(label: str) -> str:
        """The prompt prefix of a label: 'front view of ', 'backside view of ', 'front left view of ', ..."""
        return ("backside" if label == "back" else label) + " view of "


# The reference's four view prompts (SJC, DreamFusion): what Stable Diffusion understands.
REFERENCE_VIEWS = ViewScheme("reference", sides=("front", "side", "back", "side"), overhead=("overhead",))
# Finer views for a prior trained on them (the toy prior): 45° sectors that tell left from right, and the
# overhead band in quadrants, so the label pins down which faces and which lighting the camera sees.
FINE_VIEWS = ViewScheme("fine", sides=("front", "front right", "right side", "back right", "back", "back left",
                                       "left side", "front left"),
                        overhead=("overhead front", "overhead right", "overhead back", "overhead left"))
# The fine scheme with elevation words: 'low' below 16°, 'mid' from 16° to 32°, 'top' above 66°. On the
# closed-form prior these gain far more than finer azimuth sectors (experiments/toy-prior-log.md, "View prompts").
FINE_BANDS_VIEWS = ViewScheme("fine-bands", FINE_VIEWS.sides, FINE_VIEWS.overhead,
                              side_bands=((16.0, "low"), (32.0, "mid")), top_band=(66.0, "top"))
VIEW_SCHEMES = {v.name: v for v in (REFERENCE_VIEWS, FINE_VIEWS, FINE_BANDS_VIEWS)}


def view_label(azimuth: float, elevation: float) -> str:
    """front / side / back / side by azimuth quadrant (±45° around 0, 90, 180, 270); overhead above ~42°."""
    return REFERENCE_VIEWS.label(azimuth, elevation)


def spiral_cameras(n: int = 100, turns: float = 3.0, elev_start: float = 60.0, elev_end: float = -5.0,
                   fov: float = 60.0, radius: float = 1.5, device="cpu") -> Cameras:
    """The test path: `turns` turns around the object while descending from elev_start to elev_end."""
    t = torch.linspace(0, 1, n, device=device)
    az = 360.0 * turns * t
    el = elev_start + (elev_end - elev_start) * t
    return orbit_cameras(az, el, torch.full_like(t, fov), radius)


def eval_cameras(fov: float = 60.0, radius: float = 1.5, device="cpu") -> Cameras:
    """Fixed held-out views: 8 azimuths offset from the view-prompt centres, at 20° and 50° elevation."""
    az = torch.tensor([22.5 + 45.0 * k for k in range(8)] * 2, device=device)
    el = torch.tensor([20.0] * 8 + [50.0] * 8, device=device)
    return orbit_cameras(az, el, torch.full_like(az, fov), radius)


def camera_rays(cams: Cameras, height: int, width: int, subpixel: int = 1):
    """World-space ray origins and unit directions, (B, H*s, W*s, 3) each, for pixel-centre rays."""
    h, w = height * subpixel, width * subpixel
    dev, dt = cams.pos.device, cams.pos.dtype
    ys = (torch.arange(h, device=dev, dtype=dt) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=dev, dtype=dt) + 0.5) / w * 2 - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    tan = torch.tan(cams.fov / 2).view(-1, 1, 1)
    d_cam = torch.stack([xx * tan * (w / h), -yy * tan, -torch.ones_like(xx).expand_as(xx * tan)], -1)
    d = torch.einsum("bij,bhwj->bhwi", cams.rot, d_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    o = cams.pos.view(-1, 1, 1, 3).expand_as(d)
    return o, d

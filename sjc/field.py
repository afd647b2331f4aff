"""The 3D asset θ: a dense voxel radiance field (density + appearance grids) and a background texture."""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def inverse_colour(value: float, pixel_space: bool) -> float:
    """The raw value whose activated colour is `value` (clamped inside (-1, 1) for pixel space)."""
    if not pixel_space:
        return value
    p = min(max((value + 1) / 2, 1e-3), 1 - 1e-3)
    return math.log(p / (1 - p))


def _layout(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last_3d if t.is_contiguous(memory_format=torch.channels_last_3d) and t.shape[1] > 1 \
        else torch.contiguous_format


class VoxelField(nn.Module):
    """Density grid (1 channel) and appearance grid (C channels) on [-1, 1]^3, plus a 4x4 background."""

    def __init__(self, grid_size: int, channels: int, pixel_space: bool = True, density_shift: float = -1.0,
                 appearance_init: str = "zeros", background_init: float = 0.0, generator=None, device="cpu"):
        super().__init__()
        n = grid_size
        self.pixel_space = pixel_space
        self.density_shift = density_shift
        self.density_raw = nn.Parameter(torch.zeros(1, 1, n, n, n, device=device))
        app = (torch.randn(1, channels, n, n, n, generator=generator).to(device) if appearance_init == "randn"
               else torch.zeros(1, channels, n, n, n, device=device))
        # Stored channels-last: a trilinear lookup reads each corner's channels as one contiguous run.
        self.appearance_raw = nn.Parameter(app.contiguous(memory_format=torch.channels_last_3d))
        self.d_scale = nn.Parameter(torch.zeros((), device=device))
        bg = inverse_colour(background_init, pixel_space)
        self.background_raw = nn.Parameter(torch.full((1, channels, 4, 4), bg, device=device))
        # Cells the fast renderer samples (refreshed from the density every few steps; saved in checkpoints).
        self.register_buffer("occupancy", torch.ones(n, n, n, dtype=torch.bool, device=device))

    @property
    def grid_size(self) -> int:
        return self.density_raw.shape[-1]

    @property
    def channels(self) -> int:
        return self.appearance_raw.shape[1]

    def activate_density(self, raw: torch.Tensor) -> torch.Tensor:
        """softplus(raw · exp(d_scale) + shift): non-negative volume density per unit length."""
        return F.softplus(raw * self.d_scale.exp() + self.density_shift)

    def activate_colour(self, raw: torch.Tensor) -> torch.Tensor:
        """Pixel space: sigmoid·2−1 into [-1, 1]; latent space: raw features."""
        return torch.sigmoid(raw) * 2 - 1 if self.pixel_space else raw

    @staticmethod
    def _sample(grid: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        """Trilinear lookup of a (1, C, N, N, N) grid at world points (P, 3) → (P, C)."""
        g = pts.view(1, 1, 1, -1, 3)
        return F.grid_sample(grid, g, mode="bilinear", padding_mode="zeros", align_corners=True).view(grid.shape[1], -1).t()

    def density(self, pts: torch.Tensor) -> torch.Tensor:
        """Volume density at world points (P, 3) → (P,)."""
        return self.activate_density(self._sample(self.density_raw, pts)[:, 0])

    def colour(self, pts: torch.Tensor) -> torch.Tensor:
        """Appearance at world points (P, 3) → (P, C)."""
        return self.activate_colour(self._sample(self.appearance_raw, pts))

    def background(self, dirs: torch.Tensor) -> torch.Tensor:
        """Background looked up by ray direction (R, 3) in spherical (azimuth, elevation) coordinates → (R, C)."""
        u = torch.atan2(dirs[:, 0], dirs[:, 2]) / math.pi
        v = -torch.asin(dirs[:, 1].clamp(-1, 1)) * (2 / math.pi)
        # Azimuth wraps around: pad the texture by one texel on each side in u so ±180° meet without a seam.
        tex = torch.cat([self.background_raw[..., -1:], self.background_raw, self.background_raw[..., :1]], -1)
        w = self.background_raw.shape[-1]
        g = torch.stack([u * w / (w + 2), v], -1).view(1, 1, -1, 2)
        raw = F.grid_sample(tex, g, mode="bilinear", padding_mode="border", align_corners=False)
        return self.activate_colour(raw.view(self.channels, -1).t())

    def density_grid(self) -> torch.Tensor:
        """Density at the voxel centres, (N, N, N) indexed [z, y, x]."""
        return self.activate_density(self.density_raw[0, 0])

    @torch.no_grad()
    def refresh_occupancy(self, threshold: float) -> None:
        """Mark the cells whose trilinear neighbourhood is denser than `threshold` (see render.occupancy_from_density)."""
        from .render import occupancy_from_density
        self.occupancy.copy_(occupancy_from_density(self.density_grid(), threshold))

    def occupancy_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(fine, coarse) occupancy the fast renderer skips by, as last refreshed (all cells at creation)."""
        key = (self.occupancy.data_ptr(), self.occupancy._version)
        if getattr(self, "_coarse_key", None) != key:
            from .render import coarse_occupancy
            self._coarse, self._coarse_key = coarse_occupancy(self.occupancy), key
        return self.occupancy, self._coarse

    def colour_at(self, pts: torch.Tensor) -> torch.Tensor:
        """Colour at world points, for mesh vertices (no grad)."""
        with torch.no_grad():
            return self.colour(pts)

    @contextmanager
    def frozen_geometry(self):
        """Inside, only the appearance takes gradients: density, its scale and the background are constants."""
        geometry = [p for p in (self.density_raw, self.d_scale, self.background_raw) if p.requires_grad]
        for p in geometry:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in geometry:
                p.requires_grad_(True)

    def param_groups(self, lr: float, bg_lr: float) -> list[dict]:
        """Optimiser groups: density, appearance and d_scale at lr; the background at bg_lr."""
        return [{"params": [self.density_raw, self.appearance_raw, self.d_scale], "lr": lr},
                {"params": [self.background_raw], "lr": bg_lr}]

    @torch.no_grad()
    def resample(self, grid_size: int) -> None:
        """Trilinearly resample both grids to a new size (the optimiser must be rebuilt afterwards)."""
        for name in ("density_raw", "appearance_raw"):
            old = getattr(self, name)
            new = F.interpolate(old.data, size=(grid_size,) * 3, mode="trilinear", align_corners=True)
            setattr(self, name, nn.Parameter(new.contiguous(memory_format=_layout(old))))
        self.occupancy = torch.ones((grid_size,) * 3, dtype=torch.bool, device=self.occupancy.device)

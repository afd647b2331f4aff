"""Export: images, turntable video and coloured meshes from a voxel field."""

from __future__ import annotations

import math
from pathlib import Path

import imageio
import numpy as np
import torch
import trimesh
from PIL import Image
from skimage import measure

from .atomic import atomic_path
from .errors import SJCError

MESH_FORMATS = ("glb", "ply", "obj")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")   # containers that take H.264 through imageio-ffmpeg


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """Convert a (C,H,W) or (B,C,H,W) image in [-1,1] (C = 1 or 3) to HxWx3 / BxHxWx3 uint8."""
    img = img.detach().float().cpu()
    if img.dim() not in (3, 4) or img.shape[-3] not in (1, 3):
        raise ValueError(f"expected (C,H,W) or (B,C,H,W) with C in (1, 3), got {tuple(img.shape)}")
    if img.shape[-3] == 1:
        img = img.expand(*img.shape[:-3], 3, *img.shape[-2:])
    img = ((img + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)
    return img.movedim(-3, -1).contiguous().numpy()


def image_grid(imgs: torch.Tensor, ncol: int | None = None) -> np.ndarray:
    """Tile a (B,C,H,W) batch in [-1,1] into one HxWx3 uint8 grid image (empty cells white)."""
    arr = to_uint8(imgs)
    b, h, w, _ = arr.shape
    ncol = ncol or math.ceil(math.sqrt(b))
    nrow = math.ceil(b / ncol)
    cells = np.full((nrow * ncol, h, w, 3), 255, dtype=np.uint8)
    cells[:b] = arr
    return cells.reshape(nrow, ncol, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(nrow * h, ncol * w, 3)


def _upscale(arr: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale the H and W axes (-3, -2) of an ...xHxWx3 array."""
    return arr if scale == 1 else arr.repeat(scale, axis=-3).repeat(scale, axis=-2)


def save_image(path, img: torch.Tensor, scale: int = 1, ncol: int | None = None) -> Path:
    """Write a (C,H,W) image or (B,C,H,W) batch (as a grid, `ncol` wide) in [-1,1] to a PNG, upscaled by `scale`."""
    path = Path(path)
    arr = image_grid(img, ncol) if img.dim() == 4 else to_uint8(img)
    with atomic_path(path) as tmp:   # a kill mid-write leaves the old file or none, never half a PNG
        Image.fromarray(_upscale(arr, int(scale))).save(tmp, format="PNG")
    return path


def normalize_map(x: torch.Tensor, lo=None, hi=None) -> torch.Tensor:
    """Map a depth/opacity map linearly from [lo, hi] (default min/max) to [-1, 1]."""
    x = x.detach().float()
    lo = x.min() if lo is None else torch.as_tensor(lo, dtype=x.dtype)
    hi = x.max() if hi is None else torch.as_tensor(hi, dtype=x.dtype)
    if hi <= lo:
        return torch.full_like(x, -1.0)
    return ((x - lo) / (hi - lo)).clamp(0, 1) * 2 - 1


def save_video(path, frames: torch.Tensor, fps: int = 20, min_size: int = 256) -> Path:
    """Write (T,3,H,W) frames in [-1,1] to an H.264 MP4, upscaled and padded to multiples of 16."""
    path = Path(path)
    arr = to_uint8(frames)
    _, h, w, _ = arr.shape
    arr = _upscale(arr, max(1, math.ceil(min_size / h)))
    h, w = arr.shape[1:3]
    pad = ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0))
    arr = np.pad(arr, pad, mode="edge")
    with atomic_path(path) as tmp:
        writer = imageio.v2.get_writer(
            tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
            macro_block_size=1, ffmpeg_log_level="error",
        )
        try:
            for frame in arr:
                writer.append_data(frame)
        finally:
            writer.close()
    return path


def extract_mesh(density, level: float, colour_fn=None) -> trimesh.Trimesh:
    """Marching-cubes mesh (world xyz, outward normals) of an (N,N,N) [z,y,x] density at `level`."""
    if isinstance(density, torch.Tensor):
        density = density.detach().float().cpu().numpy()
    density = np.asarray(density, dtype=np.float32)
    if density.ndim != 3 or len(set(density.shape)) != 1:
        raise ValueError(f"expected an (N,N,N) density grid, got {density.shape}")
    if not math.isfinite(level):
        raise SJCError(f"the surface level must be a finite density, got {level}: give a number to sjc export --level")
    lo, hi = float(density.min()), float(density.max())
    if hi < level:
        raise SJCError(
            f"nothing to mesh: the field's density never reaches the level {level:g} "
            f"(max {hi:.3g}); train longer, or lower the level with sjc export --level"
        )
    if lo >= level:
        raise SJCError(
            f"nothing to mesh: the field's density is above the level {level:g} everywhere "
            f"(min {lo:.3g}); raise the level with sjc export --level"
        )
    n = density.shape[0]
    padded = np.pad(density, 1, mode="constant", constant_values=min(lo, level) - 1.0)
    verts, faces, _, _ = measure.marching_cubes(padded, level=level)
    # (k, j, i) padded index coords -> world (x, y, z). This axis reversal mirrors the mesh,
    # which turns skimage's winding into outward-facing normals, so `faces` is kept as is.
    verts = -1.0 + 2.0 * (verts[:, ::-1] - 1.0) / (n - 1)
    verts = np.clip(verts, -1.0, 1.0)   # a solid touching the box is capped on the box face, not a voxel beyond
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    if colour_fn is not None:
        with torch.no_grad():
            rgb = colour_fn(torch.from_numpy(np.ascontiguousarray(verts, dtype=np.float32)))
        rgb = to_uint8(rgb.reshape(-1, 3).T[:, None, :])[0]  # (V,3) as a 3x1xV image -> (V,3) uint8
        mesh.visual.vertex_colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)
    return mesh


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded colours in [0, 1] → linear ones in [0, 1] (the sRGB transfer function, undone), in float."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


UNLIT_MATERIAL = {"pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0,
                                           "roughnessFactor": 1.0},
                  "extensions": {"KHR_materials_unlit": {}}}


def vertex_coloured_glb(mesh: trimesh.Trimesh) -> bytes:
    """A vertex-coloured mesh as GLB bytes that a viewer shows as the renders show it: COLOR_0 linear (glTF's
    convention) in float, so dark tones keep their steps; vertex normals; an unlit material, since the colours
    already hold the shading (a viewer without KHR_materials_unlit falls back to a matte, non-metallic surface)."""
    rgba = np.asarray(mesh.visual.vertex_colors, dtype=np.float64) / 255.0
    plain = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    plain.vertex_attributes["_linear_colour"] = np.concatenate([srgb_to_linear(rgba[:, :3]), rgba[:, 3:]], 1)

    def finish(tree: dict) -> None:
        tree["materials"] = [UNLIT_MATERIAL]
        tree["extensionsUsed"] = sorted({*tree.get("extensionsUsed", []), "KHR_materials_unlit"})
        for prim in (prim for m in tree["meshes"] for prim in m["primitives"]):
            prim["attributes"]["COLOR_0"] = prim["attributes"].pop("_linear_colour")
            prim["material"] = 0

    return trimesh.exchange.gltf.export_glb(plain.scene(), include_normals=True, tree_postprocessor=finish)


def export_mesh(mesh: trimesh.Trimesh, path, fmt: str | None = None) -> Path:
    """Atomically write `mesh` as glb, ply or obj (OBJ stores vertex colours as extra `v` values).

    The colours are the renders' (sRGB-encoded). GLB gets them as glTF defines them, linear, under an unlit material
    (`vertex_coloured_glb`); PLY and OBJ have no convention and keep them as rendered, in 8 bits.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in MESH_FORMATS:
        raise SJCError(f"unknown mesh format '{fmt}': choose glb, ply or obj")
    with atomic_path(path) as tmp:
        if fmt == "glb" and mesh.visual.kind == "vertex":
            tmp.write_bytes(vertex_coloured_glb(mesh))
        else:
            mesh.export(file_obj=str(tmp), file_type=fmt)
    return path

"""Tests for sjc.export: images, video and coloured meshes."""

import math
import sys
from pathlib import Path

import imageio
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sjc.errors import SJCError  # noqa: E402
from sjc.export import (  # noqa: E402
    export_mesh,
    extract_mesh,
    image_grid,
    normalize_map,
    save_image,
    save_video,
    to_uint8,
)

N = 32


def _grid_points(n=N):
    """World coordinates (z, y, x) of an n^3 grid indexed [k, j, i]."""
    t = torch.linspace(-1, 1, n)
    return torch.meshgrid(t, t, t, indexing="ij")


def _blob(centre, radius=0.5, n=N):
    """Density 10*(r - |p - c|) clipped at 0, indexed [z, y, x]; level 5 sits at |p - c| = r - 0.5."""
    z, y, x = _grid_points(n)
    cx, cy, cz = centre
    dist = ((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2).sqrt()
    return (10 * (radius - dist)).clamp(min=0)


# ---------------------------------------------------------------- images


def test_to_uint8_values_and_clamping():
    img = torch.tensor([-1.0, 0.0, 1.0, -3.0, 2.5, 0.5]).view(1, 1, 6).expand(3, 1, 6)
    out = to_uint8(img)
    assert out.shape == (1, 6, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 128, 255, 0, 255, 191]


def test_to_uint8_grey_and_batch():
    grey = torch.zeros(2, 1, 4, 5)
    grey[1] = 1.0
    out = to_uint8(grey)
    assert out.shape == (2, 4, 5, 3)
    assert (out[0] == 128).all() and (out[1] == 255).all()
    rgb = torch.stack([torch.full((4, 5), v) for v in (-1.0, 0.0, 1.0)])
    assert to_uint8(rgb)[2, 3].tolist() == [0, 128, 255]


def test_image_grid_layout():
    imgs = torch.stack([torch.full((3, 4, 6), -1.0 + 0.1 * b) for b in range(5)])
    grid = image_grid(imgs)  # ceil(sqrt(5)) = 3 columns, 2 rows
    assert grid.shape == (8, 18, 3)
    assert (grid[4:, 12:] == 255).all()  # missing sixth cell is white
    cells = [grid[r * 4:(r + 1) * 4, c * 6:(c + 1) * 6] for r in range(2) for c in range(3)]
    for b in range(5):
        assert (cells[b] == to_uint8(imgs[b])).all()
    assert image_grid(imgs, ncol=5).shape == (4, 30, 3)
    assert image_grid(imgs, ncol=2).shape == (12, 12, 3)


def test_save_image_single_and_batch(tmp_path):
    p = save_image(tmp_path / "sub" / "a.png", torch.rand(3, 8, 10) * 2 - 1, scale=3)
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size == (30, 24) and im.mode == "RGB"
        arr = np.asarray(im)
    assert (arr[0:3, 0:3] == arr[0, 0]).all()  # nearest-neighbour blocks
    save_image(tmp_path / "b.png", torch.zeros(4, 1, 8, 8), scale=2)
    with Image.open(tmp_path / "b.png") as im:
        assert im.size == (32, 32)


def test_normalize_map():
    x = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    out = normalize_map(x)
    assert out.min().item() == pytest.approx(-1) and out.max().item() == pytest.approx(1)
    assert out[0, 0, 1].item() == pytest.approx(-0.5)
    fixed = normalize_map(x, lo=0.0, hi=10.0)
    assert fixed[0, 1, 1].item() == pytest.approx(0.0)
    assert (normalize_map(torch.full((2, 1, 3, 3), 4.0)) == -1).all()


# ---------------------------------------------------------------- video


def test_save_video_roundtrip(tmp_path):
    t = 6
    frames = torch.rand(t, 3, 50, 70) * 2 - 1
    path = save_video(tmp_path / "vid" / "turn.mp4", frames, fps=10)
    assert path.exists() and path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == ["turn.mp4"]  # no temp files left
    reader = imageio.v2.get_reader(path)
    try:
        shapes = [f.shape for f in reader]
    finally:
        reader.close()
    assert len(shapes) == t
    h, w, _ = shapes[0]
    assert h >= 256 and h % 16 == 0 and w % 16 == 0
    assert (h, w) == (304, 432)  # factor ceil(256/50) = 6: 300x420 padded to 304x432


# ---------------------------------------------------------------- meshes


def test_extract_mesh_sphere():
    mesh = extract_mesh(_blob((0, 0, 0), radius=1.0), level=5.0)
    iso = 0.5
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(radii.mean() - iso) < 0.05
    assert mesh.is_watertight
    assert mesh.volume > 0
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * iso**3, rel=0.15)
    centres = mesh.triangles_center
    dots = (mesh.face_normals * centres).sum(1)
    assert dots.mean() > 0 and (dots > 0).mean() > 0.99


def test_extract_mesh_numpy_input_and_box_touching_is_closed():
    dens = np.full((16, 16, 16), 3.0, dtype=np.float32)
    dens[:, :, :4] = 0.0  # dense everywhere except x < about -0.5: touches the box
    mesh = extract_mesh(dens, level=1.0)
    assert mesh.is_watertight and mesh.volume > 0
    lo, hi = mesh.bounds
    assert hi == pytest.approx([1, 1, 1], abs=0.15) and lo[1:] == pytest.approx([-1, -1], abs=0.15)
    assert -0.7 < lo[0] < -0.4


@pytest.mark.parametrize("centre", [(0.5, 0, 0), (0, 0.5, 0), (0, 0, 0.5)])
def test_extract_mesh_axis_order(centre):
    mesh = extract_mesh(_blob(centre, radius=0.35), level=1.0)
    assert mesh.vertices.mean(0) == pytest.approx(centre, abs=0.03)
    assert mesh.volume > 0


def test_extract_mesh_vertex_colours():
    seen = {}

    def colour_fn(xyz):
        seen["arg"] = xyz
        red = torch.tensor([1.0, -1.0, -1.0])
        blue = torch.tensor([-1.0, -1.0, 1.0])
        return torch.where((xyz[:, :1] > 0), red, blue)

    mesh = extract_mesh(_blob((0, 0, 0), radius=1.0), level=5.0, colour_fn=colour_fn)
    assert seen["arg"].dtype == torch.float32 and seen["arg"].shape == (len(mesh.vertices), 3)
    cols = np.asarray(mesh.visual.vertex_colors)
    assert cols.shape == (len(mesh.vertices), 4) and cols.dtype == np.uint8
    pos = mesh.vertices[:, 0] > 0
    assert pos.any() and (~pos).any()
    assert (cols[pos] == [255, 0, 0, 255]).all()
    assert (cols[~pos] == [0, 0, 255, 255]).all()


def test_extract_mesh_empty_field_errors():
    with pytest.raises(SJCError, match="nothing to mesh") as info:
        extract_mesh(torch.zeros(8, 8, 8) + 0.5, level=5.0)
    assert "max 0.5" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SJCError, match="nothing to mesh"):
        extract_mesh(torch.full((8, 8, 8), 9.0), level=5.0)


def _coloured_sphere():
    return extract_mesh(
        _blob((0, 0, 0), n=16), level=2.0,
        colour_fn=lambda p: torch.where(p[:, :1] > 0, torch.tensor([1.0, -1, -1]), torch.tensor([-1.0, -1, 1])),
    )


@pytest.mark.parametrize("fmt", ["glb", "ply", "obj"])
def test_export_mesh_roundtrip(tmp_path, fmt):
    mesh = _coloured_sphere()
    out = export_mesh(mesh, tmp_path / "m" / f"mesh.{fmt}")
    assert out == tmp_path / "m" / f"mesh.{fmt}" and out.stat().st_size > 0
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    back = trimesh.load(out, force="mesh", process=False)
    assert len(back.faces) == len(mesh.faces)
    assert back.bounds == pytest.approx(mesh.bounds, abs=1e-5)
    if fmt == "glb":
        assert len(back.vertices) <= len(mesh.vertices)
        back, cols = glb_geometry(out)
        cols = np.round(cols[:, :3] * 255)   # pure red and blue: the same linear as sRGB
    else:
        assert len(back.vertices) == len(mesh.vertices)
        cols = np.asarray(back.visual.vertex_colors)[:, :3]
    red = back.vertices[:, 0] > 1e-6
    blue = back.vertices[:, 0] < -1e-6
    assert (cols[red] == [255, 0, 0]).all() and (cols[blue] == [0, 0, 255]).all()


def test_export_obj_writes_colours_on_v_lines(tmp_path):
    out = export_mesh(_coloured_sphere(), tmp_path / "mesh.txt", fmt="obj")
    v_lines = [ln.split() for ln in out.read_text().splitlines() if ln.startswith("v ")]
    assert v_lines and all(len(v) == 7 for v in v_lines)


def test_export_mesh_format_from_suffix_and_unknown(tmp_path):
    mesh = _coloured_sphere()
    out = export_mesh(mesh, tmp_path / "a.PLY")
    assert out.read_bytes().startswith(b"ply")
    with pytest.raises(SJCError, match="unknown mesh format 'stl': choose glb, ply or obj"):
        export_mesh(mesh, tmp_path / "a.stl")
    with pytest.raises(SJCError, match="unknown mesh format"):
        export_mesh(mesh, tmp_path / "a.glb", fmt="fbx")
    assert not (tmp_path / "a.stl").exists()


def glb_geometry(path):
    """(the GLB's one mesh, its COLOR_0 as stored) — trimesh keeps COLOR_0 beside a material as a vertex attribute."""
    scene = trimesh.load(path, force="scene", process=False)
    (geom,) = scene.geometry.values()
    return geom, np.asarray(geom.visual.vertex_attributes["color"])


def glb_json(path) -> dict:
    import json
    import struct

    data = Path(path).read_bytes()
    (length,) = struct.unpack("<I", data[12:16])
    return json.loads(data[20:20 + length])


@pytest.mark.parametrize("srgb", [128, 10, 3])
def test_glb_vertex_colours_are_linear_floats_and_ply_obj_keep_the_rendered_ones(tmp_path, srgb):
    from sjc.export import srgb_to_linear

    c = srgb / 255
    mesh = extract_mesh(_blob((0, 0, 0), n=16), level=2.0, colour_fn=lambda p: torch.full((len(p), 3), c * 2 - 1))
    linear = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4   # the sRGB transfer undone
    assert srgb_to_linear(np.array([c]))[0] == pytest.approx(linear, rel=1e-12)
    _, cols = glb_geometry(export_mesh(mesh, tmp_path / "m.glb"))
    assert cols.dtype == np.float32 and np.allclose(cols[:, :3], linear, rtol=1e-6) and (cols[:, 3] == 1).all()
    for fmt in ("ply", "obj"):
        back = trimesh.load(export_mesh(mesh, tmp_path / f"m.{fmt}"), force="mesh", process=False)
        assert (np.asarray(back.visual.vertex_colors)[:, :3] == srgb).all(), fmt
    assert (np.asarray(mesh.visual.vertex_colors)[:, :3] == srgb).all()   # the mesh itself is not changed


def test_dark_tones_stay_distinct_in_glb():
    from sjc.export import srgb_to_linear

    lin = srgb_to_linear(np.arange(41) / 255).astype(np.float32)   # as COLOR_0 stores them
    assert len(np.unique(lin)) == 41 and lin[0] == 0 and lin[1] > 0


def test_glb_has_normals_and_an_unlit_non_metallic_material(tmp_path):
    out = export_mesh(_coloured_sphere(), tmp_path / "m.glb")
    tree = glb_json(out)
    (prim,) = tree["meshes"][0]["primitives"]
    assert {"POSITION", "NORMAL", "COLOR_0"} <= set(prim["attributes"]) and prim["material"] == 0
    (material,) = tree["materials"]
    assert material["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert "KHR_materials_unlit" in material["extensions"] and "KHR_materials_unlit" in tree["extensionsUsed"]
    geom, _ = glb_geometry(out)
    outward = np.einsum("ij,ij->i", geom.vertex_normals, geom.vertices - geom.vertices.mean(0))
    assert (outward > 0).all()

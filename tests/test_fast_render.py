"""The fast renderer against the dense reference: packing, occupancy skipping, early termination, tolerances.

Stated tolerance (docs/performance.md): a skipped sample has density ≤ the occupancy threshold τ, so
skipping changes a ray's transmittance by at most 1 − exp(−τ·2√3); early termination drops samples
whose weights sum to < 1e-4. Images (range 2) therefore differ by at most 2·(τ·2√3 + 1e-4).
"""

import contextlib
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from sjc.cameras import orbit_cameras
from sjc.field import VoxelField
from sjc.render import (coarse_occupancy, dilate, max_samples, occupancy_from_density, occupied_samples, ray_box_intersect,
                        render, sample_step, segment_exclusive_cumsum)
from sjc.toyworld import voxel_centres

TAU = 1e-3
IMAGE_TOL = 2 * (TAU * 2 * math.sqrt(3) + 1e-4)


def cams():
    return orbit_cameras(torch.tensor([30.0, 200.0, 95.0]), torch.tensor([20.0, 70.0, -5.0]),
                         torch.tensor([55.0, 45.0, 60.0]))


FAST = ["packed", "fused"]


def both(field, res=16, fast="fast"):
    """Render with the dense and a fast renderer; outputs and gradients of one loss on images, depths and emptiness."""
    res_out = {}
    for r in ("dense", fast):
        field.zero_grad()
        out = render(field, cams(), res, res, renderer=r)
        loss = (out.image.square().sum() + 0.1 * out.depth.sum()
                + 100 * out.emptiness / out.n_samples)
        loss.backward()
        res_out["fast" if r == fast else r] = (out, field.density_raw.grad.clone(), field.appearance_raw.grad.clone(),
                                               field.d_scale.grad.clone())
    return res_out


def blob_field(n=40, seed=0, empty_raw=-30.0):
    """Random density inside a ball, (numerically) empty outside, random colours."""
    g = torch.Generator().manual_seed(seed)
    f = VoxelField(n, 3)
    with torch.no_grad():
        inside = voxel_centres(n).norm(dim=-1) < 0.6
        f.density_raw.copy_(torch.where(inside, torch.randn(n, n, n, generator=g) * 2 + 2, empty_raw)[None, None])
        f.appearance_raw.normal_(generator=g)
    f.refresh_occupancy(TAU)
    return f


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_segment_exclusive_cumsum_matches_a_loop():
    x = torch.rand(10, dtype=torch.float32)
    ray = torch.tensor([0, 0, 0, 2, 2, 3, 3, 3, 3, 5])
    out = segment_exclusive_cumsum(x, ray, 7)
    ref = torch.zeros(10)
    for i in range(1, 10):
        ref[i] = ref[i - 1] + x[i - 1] if ray[i] == ray[i - 1] else 0.0
    assert torch.allclose(out, ref, atol=1e-6)


def test_initial_field_renders_identically():
    f = VoxelField(24, 3)   # all cells occupied: the packed renderer is the dense one
    r = both(f, fast="packed")
    assert torch.equal(r["dense"][0].image, r["fast"][0].image)
    assert torch.equal(r["dense"][1], r["fast"][1])


@pytest.mark.parametrize("pixel_space,channels", [(True, 3), (False, 4), (False, 2)])   # 2: the generic path
def test_fused_kernel_matches_dense_values_and_gradients(pixel_space, channels):
    """The C++ forward and hand-written backward against autograd through the dense renderer."""
    g = torch.Generator().manual_seed(3)
    f = VoxelField(20, channels, pixel_space)
    with torch.no_grad():
        f.density_raw.copy_(torch.randn(f.density_raw.shape, generator=g) * 2)
        f.appearance_raw.normal_(generator=g)
        f.d_scale.fill_(0.3)
    r = both(f, fast="fused")
    (od, gd, ad, sd), (of, gf, af, sf) = r["dense"], r["fast"]
    # Early termination (T < 1e-4) is the only difference from the dense sum.
    for a, b in ((od.image, of.image), (od.opacity, of.opacity)):
        assert (a - b).abs().max() < 2e-4
    assert (od.depth - of.depth).abs().max() < 2e-3
    # The emptiness sum taken inside the kernel (weights never materialised) is the dense one's.
    assert of.weights is None and torch.allclose(od.emptiness, of.emptiness, rtol=1e-4)
    assert 0 < of.n_evaluated <= of.n_samples == od.n_samples
    assert torch.allclose(gd, gf, rtol=1e-3, atol=1e-4) and torch.allclose(ad, af, rtol=1e-3, atol=1e-4)
    assert torch.allclose(sd, sf, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("renderer", ["dense", "packed", "fused"])
def test_frozen_geometry_gives_the_appearance_gradient_alone(renderer):
    """The polish's backward (geometry frozen): the same appearance gradient to the last bit, none for the geometry."""
    f = blob_field(24, seed=2)
    grads = []
    for frozen in (False, True):
        f.zero_grad(set_to_none=True)
        with f.frozen_geometry() if frozen else contextlib.nullcontext():
            out = render(f, cams(), 16, 16, renderer=renderer)
            (out.image.square().sum() + 0.1 * out.depth.sum()).backward()
        grads.append(f.appearance_raw.grad.clone())
    assert f.density_raw.grad is None and f.d_scale.grad is None and f.background_raw.grad is None
    assert torch.equal(grads[0], grads[1]) and grads[1].abs().sum() > 0
    assert all(p.requires_grad for p in f.parameters())   # restored on the way out


def test_fused_kernel_is_deterministic_with_threads():
    f = blob_field(32, seed=4)
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, b = both(f, fast="fused")["fast"], both(f, fast="fused")["fast"]
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(a[0].image, b[0].image) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_skipped_cells_are_below_the_threshold():
    torch.manual_seed(0)
    f = VoxelField(20, 3)
    with torch.no_grad():
        f.density_raw.normal_(-6, 2)
    occ = occupancy_from_density(f.density_grid(), 0.05)
    pts = torch.rand(20000, 3) * 2 - 1
    cell = ((pts + 1) * 0.5 * 19).round().long()
    skipped = ~occ[cell[:, 2], cell[:, 1], cell[:, 0]]
    assert skipped.any() and (~skipped).any()
    assert (f.density(pts[skipped]) <= 0.05 + 1e-6).all()


def test_coarse_pass_keeps_every_sample_the_fine_grid_keeps():
    f = blob_field(40)
    fine = f.occupancy
    from sjc.cameras import camera_rays
    o, d = (x.reshape(-1, 3) for x in camera_rays(cams(), 16, 16))
    step = sample_step(40, 0.5)
    n_samples = max_samples(step)
    t_near, t_far = ray_box_intersect(o, d)
    two_pass = occupied_samples(o, d, t_near, t_far, step, n_samples, fine, coarse_occupancy(fine))
    all_cells = occupied_samples(o, d, t_near, t_far, step, n_samples, fine, torch.ones_like(coarse_occupancy(fine)))
    assert torch.equal(two_pass[0], all_cells[0]) and torch.equal(two_pass[1], all_cells[1])
    assert two_pass[0].numel() < two_pass[3] / 2   # most of the box is skipped


@pytest.mark.parametrize("fast", FAST)
def test_exactly_empty_space_is_skipped_without_changing_anything(fast):
    f = blob_field(40)
    assert f.occupancy.float().mean() < 0.5
    r = both(f, fast=fast)
    (od, gd, ad, _), (of, gf, af, _) = r["dense"], r["fast"]
    if fast == "packed":
        assert of.weights.numel() < od.weights.numel() / 3
    # Early termination drops at most 1e-4 of weight per ray.
    assert (od.image - of.image).abs().max() < 3e-4
    assert (od.opacity - of.opacity).abs().max() < 2e-4
    assert (od.depth - of.depth).abs().max() < 2e-3
    assert cosine(gd, gf) > 0.999 and cosine(ad, af) > 0.999


@pytest.mark.parametrize("seed,fast", [(0, "packed"), (1, "packed"), (0, "fused"), (1, "fused")])
def test_random_fields_within_the_stated_tolerance(seed, fast):
    g = torch.Generator().manual_seed(seed)
    f = VoxelField(32, 3)
    with torch.no_grad():
        f.density_raw.copy_(torch.randn(1, 1, 32, 32, 32, generator=g) * 3 - 12)   # mostly thin, some dense
        f.appearance_raw.normal_(generator=g)
    f.refresh_occupancy(TAU)
    assert 0.05 < f.occupancy.float().mean() < 0.95
    r = both(f, fast=fast)
    (od, gd, ad, _), (of, gf, af, _) = r["dense"], r["fast"]
    assert (od.image - of.image).abs().max() < IMAGE_TOL
    assert (od.opacity - of.opacity).abs().max() < IMAGE_TOL / 2
    assert cosine(gd, gf) > 0.99 and cosine(ad, af) > 0.99


@pytest.mark.parametrize("fast", FAST)
def test_trained_field_within_the_stated_tolerance(fast):
    """A field optimised for 150 steps (closed-form prior, emptiness 1e4) renders the same with both renderers."""
    from sjc.config import RunConfig
    from sjc.build import build_run
    from sjc.train import train
    cfg = RunConfig(prompt="a red cube", prior="closed-form")
    cfg.field.grid_size, cfg.render.resolution, cfg.optim.steps = 24, 16, 150
    cfg.reg.emptiness_weight = 1e4
    cfg.output.device = "cpu"
    run = train(build_run(cfg), progress=False)
    run.field.refresh_occupancy(TAU)
    assert run.field.occupancy.float().mean() < 0.5
    r = both(run.field, fast=fast)
    (od, gd, ad, _), (of, gf, af, _) = r["dense"], r["fast"]
    assert (od.image - of.image).abs().max() < IMAGE_TOL
    assert (od.depth - of.depth).abs().max() < 10 * IMAGE_TOL   # depth spans [0, 10]
    assert cosine(gd, gf) > 0.99 and cosine(ad, af) > 0.99


def test_occupancy_is_refreshed_only_for_renderers_that_skip_by_it():
    from sjc.render import resolve_renderer
    cpu, cuda = torch.device("cpu"), torch.device("cuda")   # a device object needs no GPU

    def uses_occupancy(name, device):   # as the run's renderer is resolved once, when the run is built
        return resolve_renderer(name, device).occupancy
    assert uses_occupancy("fast", cpu) and uses_occupancy("fused", cpu) and uses_occupancy("packed", cuda)
    assert not uses_occupancy("fast", cuda)   # fast is the dense renderer on CUDA
    assert not uses_occupancy("dense", cpu)


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_dilate_is_a_3x3x3_max_pool(n):
    torch.manual_seed(n)
    mask = torch.rand(n, n, n) > 0.9
    pooled = torch.nn.functional.max_pool3d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    assert torch.equal(dilate(mask), pooled)
    d = torch.rand(n, n, n) ** 6
    assert torch.equal(occupancy_from_density(d, 0.3),
                       torch.nn.functional.max_pool3d(d[None, None], 3, stride=1, padding=1)[0, 0] > 0.3)


def test_bench_toy_config_is_the_default_run():
    """`sjc bench`'s toy configuration trains the learned prior's default run (its step count, not a fixed one)."""
    from sjc.bench import _bench_run, bench_renderers
    from sjc.config import RunConfig
    from sjc.build import build_run

    default = build_run(RunConfig(prompt="a blue sphere")).cfg
    assert _bench_run("toy", "fast", None).cfg.optim.steps == default.optim.steps
    res = bench_renderers("toy", steps=4, snapshots=2, rounds=1, progress=False)
    assert res["steps"] == 4 and [s["step"] for s in res["snapshots"]] == [0, 4]
    assert res["grid_size"] == default.field.grid_size and res["emptiness_weight"] == default.reg.emptiness_weight
    for s in res["snapshots"]:
        assert s["speedup"] == pytest.approx(s["dense"]["seconds_per_step"] / s["fast"]["seconds_per_step"])


def test_build_lock_of_a_killed_build_is_removed_and_a_fresh_one_waited_for(tmp_path, capsys):
    """A lock older than any build is removed (torch would wait on it forever); a fresh one is waited for."""
    import os
    import threading
    import time

    from sjc.kernels import wait_for_build_lock

    lock = tmp_path / "lock"
    wait_for_build_lock(lock)                     # no lock: returns at once
    lock.touch()
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    wait_for_build_lock(lock, stale_after=600)
    assert not lock.exists() and "left 60 min ago by a build that was killed" in capsys.readouterr().out
    lock.touch()
    threading.Timer(0.3, lock.unlink).start()     # another process finishing its build
    t0 = time.monotonic()
    wait_for_build_lock(lock, stale_after=600, poll=0.05, tell_after=0.1)
    assert time.monotonic() - t0 >= 0.25 and "waiting for another process" in capsys.readouterr().out


def test_first_build_is_announced_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    """A build from scratch says why the first run pauses (on a terminal); a cached build, or a log, hears nothing."""
    import torch.utils.cpp_extension as cpp

    from sjc import kernels as fused

    built = []
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpp, "load", lambda name, *a, **k: built.append(name) or object())
    name = fused.build_attempts(Path(fused.__file__).resolve().parent / "csrc")[0][0]
    so = tmp_path / name / f"{name}.so"
    for tty, built_at, told in [(True, None, True), (False, None, False), (True, 2e9, False), (True, 1e9, True)]:
        monkeypatch.setattr(fused, "_EXT", None)
        monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
        if built_at:   # a build newer than the sources (2033), or older (2001): edited sources rebuild
            so.write_bytes(b"")
            os.utime(so, (built_at, built_at))
        assert fused.extension() is not None and built[-1] == name
        err = capsys.readouterr().err
        assert err.count("building the fused CPU renderer for this CPU (first use only") == int(told)


def test_build_names_are_unique_to_the_checkout_and_the_cpu(tmp_path, monkeypatch):
    """Two checkouts get their own build folders (one cache, no rebuilds as they take turns); one checkout keeps its own."""
    from sjc.kernels import _cpu_signature, build_attempts

    a, b = tmp_path / "a" / "csrc", tmp_path / "b" / "csrc"
    names_a, names_b = [n for n, _, _ in build_attempts(a)], [n for n, _, _ in build_attempts(b)]
    assert names_a == [n for n, _, _ in build_attempts(tmp_path / "a" / ".." / "a" / "csrc")]   # same folder, same names
    assert not set(names_a) & set(names_b)
    assert all(n.isidentifier() for n in names_a + names_b)
    assert _cpu_signature() in names_a[0] and names_a[-1].startswith("sjc_volrend_")   # native first, portable last
    monkeypatch.setenv("SJC_PORTABLE_BUILD", "1")
    assert [n for n, _, _ in build_attempts(a)] == [names_a[-1]]

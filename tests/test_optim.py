"""The fused Adamax against torch.optim.Adamax, and the allocator setting that keeps step buffers mapped."""
import platform
import resource

import pytest
import torch

from sjc import kernels
from sjc.allocator import keep_freed_memory
from sjc.optim import FusedAdamax

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="the compiled CPU kernels could not be built")


def params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(1, 1, 6, 6, 6, generator=g)),
            torch.nn.Parameter(torch.randn(1, 4, 6, 6, 6, generator=g).contiguous(memory_format=torch.channels_last_3d)),
            torch.nn.Parameter(torch.zeros(()))]


def groups(ps):
    return [{"params": ps[:2], "lr": 0.05}, {"params": ps[2:], "lr": 1e-3}]


def run(opt, ps, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g).contiguous(memory_format=torch.preserve_format) * 0.1
            if p.dim() == 5 and p.shape[1] > 1:
                p.grad = p.grad.contiguous(memory_format=torch.channels_last_3d)
        opt.step()


@needs_kernels
def test_fused_adamax_matches_torch():
    a, b = params(), params()
    ref, fast = torch.optim.Adamax(groups(a)), FusedAdamax(groups(b))
    run(ref, a, 25)
    run(fast, b, 25)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=0, atol=1e-6)
    assert float(fast.state[b[0]]["step"]) == 25
    for key in ("exp_avg", "exp_inf"):
        assert torch.allclose(ref.state[a[1]][key], fast.state[b[1]][key], atol=1e-6)
        assert fast.state[b[1]][key].stride() == b[1].stride()   # the parameter's channels-last layout


@needs_kernels
def test_fused_adamax_resumes_from_torch_state_dict():
    """State saved by either optimiser loads into the other (as from a checkpoint: contiguous tensors)."""
    a, b = params(), params()
    ref = torch.optim.Adamax(groups(a))
    run(ref, a, 10)
    state = ref.state_dict()
    state["state"] = {i: {k: v.clone(memory_format=torch.contiguous_format) for k, v in s.items()}
                      for i, s in state["state"].items()}
    with torch.no_grad():
        for x, y in zip(a, b):
            y.copy_(x)
    fast = FusedAdamax(groups(b))
    fast.load_state_dict(state)
    run(ref, a, 10, seed=2)
    run(fast, b, 10, seed=2)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=0, atol=1e-6)


def test_fused_adamax_falls_back_to_torch_where_it_does_not_apply():
    a, b = params(), params()
    ref = torch.optim.Adamax(groups(a), weight_decay=0.1)
    fast = FusedAdamax(groups(b), weight_decay=0.1)
    run(ref, a, 5)
    run(fast, b, 5)
    assert fast._fused_kernel() is None
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_step_buffers_are_not_faulted_in_again():
    assert keep_freed_memory()
    size = 10_000_000   # 40 MB, a gradient grid's size at the reference configuration
    for _ in range(20):   # the heap settles on reusing the same block within a few rounds
        torch.ones(size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(size)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 2000   # without it each 40 MB allocation faults in ~10,000 fresh pages


def test_fused_adamax_does_not_build_cpu_kernels_for_other_devices(monkeypatch):
    p = torch.nn.Parameter(torch.zeros(3, device="meta"))
    p.grad = torch.zeros(3, device="meta")
    monkeypatch.setattr(kernels, "available", lambda: pytest.fail("the CPU kernels were asked for"))
    assert FusedAdamax([p])._fused_kernel() is None

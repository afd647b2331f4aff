"""The optimiser: torch's Adamax, with its update fused into one pass over memory on the CPU."""
from __future__ import annotations

import torch


def _dense(t: torch.Tensor) -> bool:
    """Whether a tensor's elements fill its storage span exactly (contiguous, or channels-last)."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    return t.is_contiguous() or (t.dim() in formats and t.is_contiguous(memory_format=formats[t.dim()]))


class FusedAdamax(torch.optim.Adamax):
    """torch.optim.Adamax (same hyper-parameters, state and checkpoints) whose update runs as one compiled
    pass per parameter on the CPU (sjc/csrc/adamax.cpp), where torch makes several passes over each grid.

    Used where it applies: float32 CPU parameters whose gradient has the parameter's layout, no weight
    decay, maximize, differentiable or capturable mode, and the compiled kernels available; anything else
    takes torch's own step.
    """

    def _fused_kernel(self):
        """The compiled module when every parameter with a gradient qualifies, else None (checked per step)."""
        for group in self.param_groups:
            if group["weight_decay"] or group["maximize"] or group["differentiable"] or group["capturable"]:
                return None
            for p in group["params"]:
                if p.grad is None:
                    continue
                if (p.device.type != "cpu" or p.dtype != torch.float32 or p.grad.is_sparse
                        or p.grad.dtype != torch.float32 or p.grad.stride() != p.stride()
                        or not _dense(p)):
                    return None
        from . import kernels   # checked last: a CUDA run never builds the CPU kernels
        return kernels.extension() if kernels.available() else None

    @torch.no_grad()
    def step(self, closure=None):
        ext = self._fused_kernel()
        if ext is None:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:   # as torch.optim.Adamax initialises it
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_inf"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                for key in ("exp_avg", "exp_inf"):   # state loaded from a checkpoint comes back contiguous
                    if state[key].stride() != p.stride():
                        state[key] = torch.empty_like(p).copy_(state[key])
                state["step"] += 1
                step_size = group["lr"] / (1 - beta1 ** float(state["step"]))
                ext.adamax_step(p, p.grad, state["exp_avg"], state["exp_inf"], beta1, beta2, group["eps"], step_size)
        return loss

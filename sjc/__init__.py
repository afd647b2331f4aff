"""sjc: Score Jacobian Chaining, lifting a pretrained 2D diffusion model into a 3D voxel radiance field.

The library's front door: `sjc.generate(RunConfig(prompt=...))` runs into a folder, `sjc.resume(folder)` continues
one, `sjc.load_run(folder)` rebuilds one to render or export; a prior of one's own subclasses `sjc.Prior`.
"""
__version__ = "0.1.0"

_API = {"generate": "pipeline", "resume": "pipeline", "load_run": "pipeline", "RunConfig": "config",
        "Prior": "priors", "register_prior": "priors", "build_run": "build", "train": "train"}


def __getattr__(name: str):   # imported on first use: `sjc --help` need not load torch's whole stack
    if name in _API:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module 'sjc' has no attribute {name!r}")


__all__ = list(_API)

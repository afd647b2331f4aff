"""The command line: sjc generate | resume | render | export | eval | sample2d | bench."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import RunConfig, add_config_flags, apply_overrides
from .errors import SJCError

DEFAULT_PROMPT = "a blue sphere"


def cmd_generate(a) -> None:
    from .pipeline import generate

    cfg = RunConfig.load(Path(a.config)) if a.config else RunConfig()
    if a.prompt is not None or not cfg.prompt:
        cfg.prompt = DEFAULT_PROMPT if a.prompt is None else a.prompt
    apply_overrides(cfg, a)
    out_dir, metrics = generate(cfg, progress=not a.quiet)
    _report(out_dir, metrics)


def cmd_resume(a) -> None:
    from .pipeline import resume

    out_dir, metrics = resume(Path(a.run_dir), progress=not a.quiet, steps=a.steps)
    _report(out_dir, metrics)


def cmd_render(a) -> None:
    from .pipeline import load_run, render_video

    if a.subpixel < 1:
        raise SJCError(f"--subpixel must be a positive integer, got {a.subpixel}")
    if a.out:
        check_writable(Path(a.out))
    run = load_run(Path(a.run_dir))
    path = Path(a.out) if a.out else Path(a.run_dir) / (f"turntable_subpixel{a.subpixel}.mp4" if a.subpixel > 1 else "turntable.mp4")
    print(render_video(run, path, subpixel=a.subpixel))


def cmd_export(a) -> None:
    from .pipeline import load_run, write_mesh

    run = load_run(Path(a.run_dir))
    for p in write_mesh(run, Path(a.run_dir), formats=[a.format], level=a.level):
        print(p)


def cmd_eval(a) -> None:
    from .evaluate import DEFAULT_EVAL_PROMPTS, DEFAULT_VARIANTS, run_eval

    if a.seeds < 1 or a.jobs < 1:
        raise SJCError(f"--seeds and --jobs must be at least 1, got {a.seeds} and {a.jobs}")
    base = RunConfig(prompt="eval")
    apply_overrides(base, a)
    summary = run_eval(base, a.prompts or DEFAULT_EVAL_PROMPTS, a.variants or DEFAULT_VARIANTS,
                       list(range(a.seeds)), Path(a.out), jobs=a.jobs)
    print(Path(a.out).with_suffix(".md").read_text())
    print(f"wrote {Path(a.out).with_suffix('.md')} and .json ({len(summary)} cells)")


def cmd_sample2d(a) -> None:
    import torch

    from .export import save_image
    from .priors import load_prior
    from .sample2d import heun_sample
    from .train import resolve_device

    if a.n < 1 or a.steps < 1 or a.scale < 1:
        raise SJCError(f"--n, --steps and --scale must be positive, got {a.n}, {a.steps} and {a.scale}")
    if (a.sigma_min is not None and a.sigma_min <= 0) or (a.sigma_max is not None and a.sigma_max <= (a.sigma_min or 0)):
        raise SJCError(f"need 0 < --sigma-min < --sigma-max, got {a.sigma_min} and {a.sigma_max}")
    check_writable(Path(a.out))
    cfg = RunConfig(prompt=a.prompt, prior=a.prior)
    cfg.model.model, cfg.model.model_config, cfg.render.resolution = a.model, a.model_config, a.resolution
    device = resolve_device(a.device)
    prior = load_prior(cfg, device)
    gen = torch.Generator(device).manual_seed(a.seed)
    x = heun_sample(prior, a.n, a.steps, a.sigma_min, a.sigma_max, a.prompt, a.guidance_scale, gen, device)
    print(save_image(Path(a.out), prior.decode(x), scale=a.scale))


def cmd_bench(a) -> None:
    import json

    from .bench import bench_sd

    if a.out:
        check_writable(Path(a.out))
    res = bench_sd(a.device, steps=a.steps, repeats=a.repeats, full_size=not a.tiny,
                   latent=a.latent, grid=a.grid)
    text = json.dumps(res, indent=2)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    print(text)


def check_writable(path: Path) -> None:
    """Fail now, with one line, if an output file's folder cannot be written."""
    from .pipeline import prepare_out_dir
    prepare_out_dir(path.parent if str(path.parent) else Path("."))


def _report(out_dir: Path, metrics: dict) -> None:
    gt = metrics.get("ground_truth")
    extra = f"; IoU {gt['iou']:.3f}, PSNR {gt['psnr']:.2f} dB against the true object" if gt else ""
    print(f"done: {metrics['steps']} steps in {metrics.get('train_seconds', 0):.1f} s{extra}\noutputs in {out_dir}/")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sjc", description="Score Jacobian Chaining: text prompt → 3D voxel field, video and mesh.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="lift a prompt into a 3D field (default: the built-in toy-world prior)")
    g.add_argument("prompt", nargs="?", default=None,
                   help=f'text prompt (default: the --config\'s prompt, else "{DEFAULT_PROMPT}")')
    g.add_argument("--config", help="start from a saved config.json (flags still override it)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(g)
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("resume", help="continue an interrupted run from its folder, exactly")
    r.add_argument("run_dir")
    r.add_argument("--steps", type=int, help="raise the step budget (train longer)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_resume)

    v = sub.add_parser("render", help="render a run's turntable video")
    v.add_argument("run_dir")
    v.add_argument("--subpixel", type=int, default=1, help="rays per pixel side, averaged (sharper final render)")
    v.add_argument("--out", help="video path (default: inside the run folder)")
    v.set_defaults(func=cmd_render)

    e = sub.add_parser("export", help="export a run's mesh")
    e.add_argument("run_dir")
    e.add_argument("--format", default="glb", choices=["glb", "ply", "obj"])
    e.add_argument("--level", type=float, help="density level of the surface (default: the evaluation level)")
    e.set_defaults(func=cmd_export)

    ev = sub.add_parser("eval", help="score prompts × method variants against the toy world's true objects")
    ev.add_argument("--prompts", nargs="+", help="toy prompts (default: 10 built-in ones)")
    ev.add_argument("--variants", nargs="+", help="method[:noview] names, e.g. paas paas:noview sds naive oracle")
    ev.add_argument("--seeds", type=int, default=1, help="seeds per cell (0 … n-1)")
    ev.add_argument("--jobs", type=int, default=1, help="parallel processes")
    ev.add_argument("--out", default="docs/eval", help="output path prefix for .md and .json")
    add_config_flags(ev)
    ev.set_defaults(func=cmd_eval)
    s2 = sub.add_parser("sample2d", help="2D samples from a prior (Karras/EDM Heun sampler) as a PNG grid")
    s2.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    s2.add_argument("--prior", help="closed-form | sd | unet2d (default: closed-form, or detected from --model)")
    s2.add_argument("--model", help="diffusers folder, cached Hub id or .safetensors file")
    s2.add_argument("--model-config", help="for a single file: the base model's folder or cached id")
    s2.add_argument("--resolution", type=int, help="image size for the closed-form prior")
    s2.add_argument("--n", type=int, default=16, help="number of samples")
    s2.add_argument("--steps", type=int, default=30, help="Heun steps")
    s2.add_argument("--sigma-min", type=float, help="smallest σ (default: the prior's table)")
    s2.add_argument("--sigma-max", type=float, help="largest σ (default: the prior's table)")
    s2.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the prior's)")
    s2.add_argument("--seed", type=int, default=0)
    s2.add_argument("--device", default="auto")
    s2.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling of the PNG")
    s2.add_argument("--out", default="samples.png")
    s2.set_defaults(func=cmd_sample2d)

    b = sub.add_parser("bench", help="time complete SJC steps (reference SD configuration, optimised vs fp32 baseline)")
    b.add_argument("--device", default="cuda" if _cuda() else "cpu")
    b.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--grid", type=int, default=100)
    b.add_argument("--latent", type=int, default=64)
    b.add_argument("--tiny", action="store_true", help="a tiny U-Net instead of SD 1.5's (CPU smoke test)")
    b.add_argument("--out", help="also write the JSON here")
    b.set_defaults(func=cmd_bench)
    return p


def torch_oom():
    import torch
    return torch.OutOfMemoryError


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SJCError as e:
        print(f"sjc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = (": the last checkpoint is kept, continue with 'sjc resume <run folder>'"
                if args.command in ("generate", "resume") else "")
        print(f"sjc: interrupted{hint}", file=sys.stderr)
        return 130
    except torch_oom() as e:
        print(f"sjc: error: out of GPU memory ({str(e).splitlines()[0][:80]}); try --offload, --attention-slicing, "
              "--half, or a smaller --grid-size / --resolution", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

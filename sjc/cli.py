"""The command line: sjc generate | resume | render | export | eval | sample2d | bench."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional

from .atomic import write_text
from .config import RunConfig, add_config_flags, apply_overrides
from .errors import SJCError, interrupt_behind
from .priors import MODEL_FLAGS, refuse_unread_flags

DEFAULT_PROMPT = "a blue sphere"
# Run settings that `sjc eval` sets per cell (method, seed) or never uses (it writes no run folder): no flags there.
EVAL_FIXED_FIELDS = ("method", "seed", "out_dir", "ckpt_every", "preview_every", "video", "mesh", "overwrite")


def cmd_generate(a) -> None:
    from .pipeline import generate

    cfg = RunConfig.load(Path(a.config)) if a.config else RunConfig()
    if a.prompt is not None or not cfg.prompt:
        cfg.prompt = DEFAULT_PROMPT if a.prompt is None else a.prompt
    given = apply_overrides(cfg, a)
    cfg.forget_resolved(given)   # what the config's run filled in and these flags change is derived anew
    refuse_unread_flags(cfg, given)
    out_dir, metrics = generate(cfg, progress=not a.quiet)
    _report(out_dir, metrics)


RESUME_OUTPUT_FLAGS = ("ckpt_every", "preview_every", "video", "mesh")   # what resume may change: never the result


def cmd_resume(a) -> None:
    from .pipeline import resume

    output = {k: getattr(a, k) for k in RESUME_OUTPUT_FLAGS if getattr(a, k) is not None}
    out_dir, metrics = resume(Path(a.run_dir), progress=not a.quiet, steps=a.steps, output=output)
    _report(out_dir, metrics)


def cmd_render(a) -> None:
    from .export import VIDEO_SUFFIXES
    from .pipeline import load_run, render_video

    if a.subpixel < 1:
        raise SJCError(f"--subpixel must be a positive integer, got {a.subpixel}")
    if a.out and Path(a.out).suffix.lower() not in VIDEO_SUFFIXES:
        raise SJCError(f"--out must name a {'/'.join(VIDEO_SUFFIXES)} file (an H.264 video), got {a.out}")
    path = Path(a.out) if a.out else Path(a.run_dir) / (f"turntable_subpixel{a.subpixel}.mp4" if a.subpixel > 1 else "turntable.mp4")
    if a.out:   # before any frame is rendered
        check_writable(path)
    run = load_run(Path(a.run_dir), device=a.device, field_only=True)
    if not a.out:   # the run folder itself, once it is known to hold a run
        check_writable(path)
    print(render_video(run, path, subpixel=a.subpixel))


def cmd_export(a) -> None:
    from .export import MESH_FORMATS, export_mesh
    from .pipeline import load_run, run_mesh

    out = Path(a.out) if a.out else None
    suffix = out.suffix.lstrip(".").lower() if out else None
    fmt = a.format or suffix or "glb"
    if out is not None and suffix != fmt or fmt not in MESH_FORMATS:
        raise SJCError(f"--out must name a .glb, .ply or .obj file (matching --format if given), got {a.out}")
    if out is not None:   # before the run loads
        check_writable(out, "--out")
    run = load_run(Path(a.run_dir), device=a.device, field_only=True)   # a mistyped folder is named, not created
    path = out or Path(a.run_dir) / f"mesh.{fmt}"
    if out is None:
        check_writable(path, "--out")
    print(export_mesh(run_mesh(run, a.level), path, fmt))


def cmd_eval(a) -> None:
    from .evaluate import DEFAULT_EVAL_PROMPTS, DEFAULT_VARIANTS, run_eval

    if a.seed is not None:
        raise SJCError(f"sjc eval runs seeds 0 … N−1 of every cell: give --seeds N, not --seed {a.seed}")
    if a.seeds < 1 or a.jobs < 1:
        raise SJCError(f"--seeds and --jobs must be at least 1, got {a.seeds} and {a.jobs}")
    base = RunConfig(prompt="eval")
    refuse_unread_flags(base, apply_overrides(base, a))
    summary = run_eval(base, a.prompts or DEFAULT_EVAL_PROMPTS, a.variants or DEFAULT_VARIANTS,
                       list(range(a.seeds)), Path(a.out), jobs=a.jobs, reuse=a.reuse or ())
    print(Path(f"{a.out}.md").read_text())   # a prefix, not a file name: "guidance-7.5" keeps its ".5"
    print(f"wrote {a.out}.md and .json ({sum(s['seeds'] for s in summary)} cells)")


def cmd_sample2d(a) -> None:
    import torch

    from .export import save_image
    from .priors import load_prior
    from .sample2d import heun_sample
    from .train import resolve_device

    if a.n < 1 or a.steps < 1 or a.scale < 1 or (a.resolution is not None and a.resolution < 1):
        raise SJCError(f"--n, --steps, --scale and --resolution must be positive, got {a.n}, {a.steps}, {a.scale} "
                       f"and {a.resolution}")
    check_writable(Path(a.out))
    cfg = RunConfig(prompt=a.prompt, prior=a.prior)
    cfg.model.model, cfg.model.model_config, cfg.render.resolution = a.model, a.model_config, a.resolution
    given = [name for name in SAMPLE2D_MODEL_FLAGS if getattr(a, name) is not None]   # how the model runs, as in generate
    for name in given:
        setattr(cfg.model, name, getattr(a, name))
    refuse_unread_flags(cfg, {f"model.{name}" for name in given})
    device = resolve_device(a.device)
    prior = load_prior(cfg, device)
    gen = torch.Generator(device).manual_seed(a.seed)
    x = heun_sample(prior, a.n, a.steps, a.sigma_min, a.sigma_max, a.prompt, a.guidance_scale, gen, device,
                    progress=sys.stderr.isatty())
    print(save_image(Path(a.out), prior.decode(x), scale=a.scale))


SAMPLE2D_MODEL_FLAGS = tuple(f for f in MODEL_FLAGS if f != "model_config")   # generate's, in sample2d
LOAD_DEVICE_HELP = ("where to load the run: auto, cpu, cuda or cuda:N (default: the run's own device, or the CPU "
                    "where the GPU it was trained on is not here)")


def cmd_bench(a) -> None:
    import json

    import torch

    from .train import resolve_device

    for flag, value in (("--threads", a.threads), ("--repeats", a.repeats), ("--steps", a.steps), ("--grid", a.grid),
                        ("--latent", a.latent)):
        if value is not None and value < 1:
            raise SJCError(f"{flag} must be a positive number, got {value}")
    for flag, value, suite in (("--configs", a.configs, "renderer"), ("--device", a.device, "sd"),
                               ("--grid", a.grid, "sd"), ("--latent", a.latent, "sd"), ("--tiny", a.tiny or None, "sd"),
                               ("--plot", a.plot, "sweep")):   # a flag the suite would ignore is a mistake
        if value is not None and a.suite != suite:
            raise SJCError(f"{flag} is for the {suite} suite only (this is {a.suite}): sjc bench {suite} {flag} ...")
    if a.plot:   # fail before the sweep, not after it
        check_writable(Path(a.plot), "--plot")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SJCError("--plot needs matplotlib, which is not installed: pip install matplotlib") from None
    if a.out:
        check_writable(Path(a.out))
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.suite == "sd":
        from .bench import bench_sd
        sizes = {k: v for k, v in (("latent", a.latent), ("grid", a.grid)) if v is not None}   # else bench_sd's own
        res = bench_sd(str(resolve_device(a.device or "auto")), steps=a.steps or 20, repeats=a.repeats,
                       full_size=not a.tiny, **sizes)
    elif a.suite == "unet":
        from .bench import bench_unet_layout
        res = {"unet": bench_unet_layout(calls=a.steps or 40, steps=a.steps or 40, repeats=a.repeats)}
    elif a.suite == "sweep":
        from .bench import plot_sweep, sweep_renderers
        res = {"sweep": sweep_renderers(rounds=a.repeats, steps=a.steps or 300)}
        if a.plot:
            plot_sweep(res["sweep"], a.plot)
    else:
        from .bench import bench_renderers
        res = {"renderer": [bench_renderers(c, a.steps, rounds=a.repeats) for c in a.configs or ("sd", "toy")]}
    text = json.dumps(res, indent=2)
    if a.out:
        write_text(Path(a.out), text + "\n")
    print(text)


def _dataclass_args(parser, cls) -> None:
    """One flag per field of a config dataclass (defaults from the class, help from its fields' comments)."""
    import dataclasses

    from .config import field_comments

    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default, type=type(f.default),
                            help=f"{comments.get(f.name, f.name.replace('_', ' '))} (default {f.default!r})")


def _dataclass_from(cls, a):
    import dataclasses
    return cls(**{f.name: getattr(a, f.name) for f in dataclasses.fields(cls)})


def cmd_prior_dataset(a) -> None:
    from .prior_training import DatasetConfig, build_dataset

    cfg = _dataclass_from(DatasetConfig, a)
    if cfg.views < 1 or cfg.resolution < 8:
        raise SJCError(f"need --views >= 1 and --resolution >= 8, got {cfg.views} and {cfg.resolution}")
    if not (cfg.radius > 0 and 0 < cfg.fov_min <= cfg.fov_max < 180 and -90 <= cfg.elev_min <= cfg.elev_max <= 90):
        raise SJCError(f"need --radius > 0, 0 < --fov-min <= --fov-max < 180 and -90 <= --elev-min <= --elev-max <= 90, "
                       f"got {cfg.radius}, {cfg.fov_min}, {cfg.fov_max}, {cfg.elev_min} and {cfg.elev_max}")
    check_writable(Path(a.out) / "dataset.pt")
    print(build_dataset(cfg, Path(a.out), progress=not a.quiet))


def cmd_prior_train(a) -> None:
    from .prior_training import ModelConfig, TrainConfig, dataset_file, train_prior

    cfg = _dataclass_from(TrainConfig, a)
    if cfg.steps < 1 or cfg.batch < 1 or cfg.lr <= 0 or (a.stop_after is not None and a.stop_after < 1):
        raise SJCError(f"need positive --steps, --batch, --lr and --stop-after, got {cfg.steps}, {cfg.batch}, {cfg.lr} "
                       f"and {a.stop_after}")
    if min(cfg.checkpoint_every, cfg.sample_every, cfg.log_every) < 1 or cfg.warmup < 0 or cfg.threads < 0:
        raise SJCError(f"need positive --checkpoint-every, --sample-every and --log-every, and --warmup and --threads "
                       f">= 0, got {cfg.checkpoint_every}, {cfg.sample_every}, {cfg.log_every}, {cfg.warmup} and "
                       f"{cfg.threads}")
    if not (0 <= cfg.ema_decay < 1 and 0 <= cfg.cond_dropout <= 1 and 0 <= cfg.view_caption <= 1):
        raise SJCError(f"need 0 <= --ema-decay < 1 and --cond-dropout, --view-caption in [0, 1], got {cfg.ema_decay}, "
                       f"{cfg.cond_dropout} and {cfg.view_caption}")
    if cfg.timestep_power <= 0:
        raise SJCError(f"--timestep-power must be positive (1 = uniform timesteps), got {cfg.timestep_power}")
    if cfg.precision not in ("float32", "bfloat16") or cfg.weights_dtype not in ("float32", "float16"):
        raise SJCError(f"need --precision float32|bfloat16 and --weights-dtype float32|float16, "
                       f"got {cfg.precision} and {cfg.weights_dtype}")
    if cfg.init and not (Path(cfg.init) / "unet").is_dir():
        raise SJCError(f"--init {cfg.init}: not a toy prior folder (it has no unet/); give e.g. sjc/weights/toy32")
    if a.text_width < 4 or a.text_width % 4 or a.text_layers < 1:   # 4 attention heads
        raise SJCError(f"need --text-width a positive multiple of 4 and --text-layers >= 1, got {a.text_width} and "
                       f"{a.text_layers}")
    model_cfg = ModelConfig(channels=tuple(a.channels) if a.channels else ModelConfig.channels, views=a.views,
                            norm_groups=a.norm_groups, text_width=a.text_width, text_layers=a.text_layers,
                            prediction_type=a.prediction_type)
    if a.norm_groups < 1 or any(c % a.norm_groups for c in model_cfg.channels):
        raise SJCError(f"every --channels width must be a multiple of --norm-groups {a.norm_groups}, "
                       f"got {' '.join(map(str, model_cfg.channels))}")
    dataset_file(Path(a.data))   # then the folder, which the check makes: nothing is left behind by bad input
    check_writable(Path(a.out) / "state.pt")
    folder = train_prior(Path(a.data), Path(a.out), cfg, model_cfg, progress=not a.quiet, stop_after=a.stop_after)
    print(folder or f"stopped after {a.stop_after} steps; run the same command again to continue")


def check_dataset_fits(data: dict, prior, path) -> None:
    """The dataset's renders have the prior's image size, or one line says how to build one that has."""
    h, w = data["shaded"].shape[-2:]
    if (h, w) != tuple(prior.shape[1:]):
        raise SJCError(f"the dataset {path} holds {h}×{w} renders but the prior makes {prior.shape[1]}×"
                       f"{prior.shape[2]} images: build one with sjc prior dataset --resolution {prior.shape[1]}")


def _toy_prior(model, device="cpu"):
    from .priors.text_unet import PixelTextPrior
    return PixelTextPrior(model, device)


def cmd_prior_check(a) -> None:
    import json

    from . import toyworld
    from .check2d import NearestRender, sample_accuracy
    from .export import save_image
    from .prior_training import HELD_OUT, load_dataset

    if a.n < 1 or a.steps < 1 or (a.views is not None and a.views < 1):
        raise SJCError(f"need positive --n, --steps and --views, got {a.n}, {a.steps} and {a.views}")
    out = Path(a.out)   # a prefix, not a file name: "guidance-7.5" keeps its ".5"
    check_writable(Path(f"{out}.json"))
    data = load_dataset(Path(a.data))
    prior = _toy_prior(a.model)
    views = list(prior.views.labels) if a.view == ["all"] else a.view or [None]
    for v in views:
        if v and v not in prior.views.labels:
            raise SJCError(f"--view {v!r} is not a view of this prior's {prior.views.name!r} scheme: use all or "
                           f"one of {', '.join(prior.views.labels)}")
    check_dataset_fits(data, prior, a.data)
    labels = prior.views.index(data["azimuth"], data["elevation"]) if a.view else None
    clf = NearestRender(data["shaded"], data["background"], a.views or (None if a.view else 500), labels)
    for v in views if a.view else ():   # a shape with no render of a view could never be the answer for it
        seen_in = clf.view_labels.view(clf.n_shapes, clf.n_views) == prior.views.labels.index(v)
        if not seen_in.any(1).all():
            raise SJCError(f"--view {v!r}: the dataset's first {clf.n_views} views of some shapes include none from "
                           f"that view, so its samples cannot be judged; raise --views, or build the dataset with more "
                           f"views (sjc prior dataset --views)")
    held = [toyworld.ToyObject(s, c) for s, c in HELD_OUT]
    trained = [o for o in toyworld.ALL_OBJECTS if (o.shape, o.colour) not in HELD_OUT]
    result = {"model": str(a.model or "built-in"), "samples_per_object": a.n * len(views), "heun_steps": a.steps,
              "guidance_scale": prior.default_guidance if a.guidance_scale is None else a.guidance_scale, "views": views}
    seen = (f", {a.n} per view prompt ({', '.join(views)}), each compared with its view's renders only" if a.view
            else "")
    lines = [(f"# 2D sample accuracy of the toy prior ({a.n * len(views)} Heun samples per object{seen}, "
              f"{a.steps} steps, guidance {result['guidance_scale']})"), "",
             "| set | objects | shape and colour right | shape right | colour right |", "|---|---|---|---|---|"]

    def mean(rows):
        return {k: sum(r[k] for r in rows) / len(rows) for k in ("correct", "shape_ok", "colour_ok")}

    for name, objs in (("trained", trained), ("held out", held)):
        rows, imgs = sample_accuracy(prior, clf, objs, a.n, a.steps, a.guidance_scale, a.seed, views,
                                     progress=sys.stderr.isatty())
        m = mean(rows)
        result[name] = {"mean": m, "objects": rows}
        if len(views) > 1:
            result[name]["by_view"] = {v: mean([r for r in rows if r["view"] == v]) for v in views}
        lines.append(f"| {name} | {len(objs)} | {m['correct']:.1%} | {m['shape_ok']:.1%} | {m['colour_ok']:.1%} |")
        save_image(out.parent / f"{out.name}-{name.replace(' ', '-')}.png", imgs[::max(1, a.n // 4)][:32 * 4],
                   scale=2, ncol=16)
        print(lines[-1], flush=True)
    if len(views) > 1:
        lines += ["", "Per view prompt (shape and colour right):", "", "| view | trained | held out |", "|---|---|---|"]
        lines += [f"| {v} | {result['trained']['by_view'][v]['correct']:.1%} | "
                  f"{result['held out']['by_view'][v]['correct']:.1%} |" for v in views]
    lines += ["", "Per held-out object:", "", "| object | right | shape | colour |", "|---|---|---|---|"]
    for obj in held:
        m = mean([r for r in result["held out"]["objects"] if r["object"] == obj.caption])
        lines.append(f"| {obj.caption} | {m['correct']:.0%} | {m['shape_ok']:.0%} | {m['colour_ok']:.0%} |")
    write_text(Path(f"{out}.json"), json.dumps(result, indent=2) + "\n")
    write_text(Path(f"{out}.md"), "\n".join(lines) + "\n")


def cmd_paas2d(a) -> None:
    import json

    import torch

    from .check2d import NearestRender, optimise_image
    from .export import save_image
    from .prior_training import load_dataset

    if a.steps < 1 or a.lr <= 0:
        raise SJCError(f"need positive --steps and --lr, got {a.steps} and {a.lr}")
    out = Path(a.out)
    if out.suffix.lower() != ".png":   # the rows go beside it as .json
        raise SJCError(f"--out must name a .png file (the rows are written beside it as .json), got {a.out}")
    check_writable(out)
    prior = _toy_prior(a.model)
    data = load_dataset(Path(a.data)) if a.data else None
    if data is not None:   # labelling needs toy-world prompts and renders of the prior's size: checked now, not late
        from . import toyworld
        truths = {p: toyworld.parse_prompt(p)[1] for p in a.prompts}
        check_dataset_fits(data, prior, a.data)
    clf = NearestRender(data["shaded"], data["background"]) if data is not None else None
    imgs, rows = [], []
    for prompt in a.prompts:
        for method in a.methods:
            x = optimise_image(prior, prompt, method, a.steps, a.lr, a.guidance_scale, a.seed, progress=sys.stderr.isatty())
            imgs.append(x)
            row = {"prompt": prompt, "method": method}
            if clf is not None:
                obj = truths[prompt]
                s, c, err = clf.classify(x)
                row.update(right=bool(list(toyworld.SHAPES)[s] == obj.shape and list(toyworld.COLOURS)[c] == obj.colour),
                           nearest_rmse=round(float(err), 4))
            rows.append(row)
            print(json.dumps(row), flush=True)
    save_image(out, torch.cat(imgs), scale=4, ncol=len(a.methods))
    write_text(out.with_suffix(".json"), json.dumps(rows, indent=2) + "\n")


def check_writable(path: Path, flag: Optional[str] = "--out") -> None:
    """Fail now, with one line naming `flag`, if an output file's folder cannot be written or the file is a folder."""
    from .pipeline import prepare_out_dir
    if path.is_dir():
        raise SJCError(f"cannot write {path}: it is a folder, not a file" + (f"; give a file path with {flag}" if flag else ""))
    prepare_out_dir(path.parent if str(path.parent) else Path("."), flag)


def _report(out_dir: Path, metrics: dict) -> None:
    from .evaluate import FINE_SUPERSAMPLE

    gt = metrics.get("ground_truth")
    fine = f" ({gt['iou_fine']:.3f} sampled {FINE_SUPERSAMPLE}× finer)" if gt and "iou_fine" in gt else ""
    extra = f"; IoU {gt['iou']:.3f}{fine}, PSNR {gt['psnr']:.2f} dB against the true object" if gt else ""
    print(f"done: {metrics['steps']} steps in {metrics.get('train_seconds', 0):.1f} s{extra}\noutputs in {out_dir}/")


def prior_defaults_text() -> str:
    """What each prior fills in where a flag is left unset (None), for generate --help."""
    from .priors.closed_form import ClosedFormPrior
    from .priors.stable_diffusion import StableDiffusionPrior
    from .priors.text_unet import PixelTextPrior
    from .priors.unet2d import UNet2DVPPrior

    rows = [f"{name}: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in cls.merged_defaults().items())
            for name, cls in (("toy", PixelTextPrior), ("closed-form", ClosedFormPrior), ("sd", StableDiffusionPrior),
                              ("unet2d", UNet2DVPPrior))]
    return "Each prior's defaults for the flags left unset -- " + "; ".join(rows) + "."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sjc", description="Score Jacobian Chaining: text prompt → 3D voxel field, video and mesh.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="lift a prompt into a 3D field (default: the built-in toy-world prior)",
                       epilog=prior_defaults_text())
    g.add_argument("prompt", nargs="?", default=None,
                   help=f'text prompt (default: the --config\'s prompt, else "{DEFAULT_PROMPT}")')
    g.add_argument("--config", help="start from a saved config.json (flags still override it)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(g)
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("resume", help="continue an interrupted run from its folder, exactly")
    r.add_argument("run_dir")
    r.add_argument("--steps", type=int, help="raise the step budget (train longer)")
    add_config_flags(r, only=RESUME_OUTPUT_FLAGS)
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_resume)

    v = sub.add_parser("render", help="render a run's turntable video")
    v.add_argument("run_dir")
    v.add_argument("--subpixel", type=int, default=1, help="rays per pixel side, averaged (sharper final render)")
    v.add_argument("--out", help="video path (default: inside the run folder)")
    v.add_argument("--device", help=LOAD_DEVICE_HELP)
    v.set_defaults(func=cmd_render)

    e = sub.add_parser("export", help="export a run's mesh")
    e.add_argument("run_dir")
    e.add_argument("--format", choices=["glb", "ply", "obj"], help="mesh format (default: --out's suffix, else glb)")
    e.add_argument("--level", type=float, help="density level of the surface (default: the evaluation level, "
                   "where one voxel's optical depth is 0.2: 0.2·(grid size − 1)/2, 4.7 at the toy default's 48³ grid)")
    e.add_argument("--out", help="mesh file (default: mesh.<format> in the run folder, replacing the one there)")
    e.add_argument("--device", help=LOAD_DEVICE_HELP)
    e.set_defaults(func=cmd_export)

    ev = sub.add_parser("eval", help="score prompts × method variants against the toy world's true objects")
    ev.add_argument("--prompts", nargs="+", help="toy prompts (default: 12 built-in ones, 6 trained and 6 held out of the toy prior)")
    ev.add_argument("--variants", nargs="+", help="method[:noview] names, e.g. paas paas:noview sds naive oracle")
    ev.add_argument("--seeds", type=int, default=1, help="seeds per cell (0 … n-1)")
    ev.add_argument("--jobs", type=int, default=1, help="parallel processes")
    ev.add_argument("--out", default="outputs/eval", help="output path prefix for .md and .json (the shipped tables: --out docs/eval)")
    ev.add_argument("--reuse", nargs="+", metavar="JSON",
                    help="earlier evals' .json files: their cells made with the same settings are not trained again")
    add_config_flags(ev, exclude=EVAL_FIXED_FIELDS)
    ev.add_argument("--seed", type=int, help=argparse.SUPPRESS)   # caught: argparse would read it as --seeds
    ev.set_defaults(func=cmd_eval)
    s2 = sub.add_parser("sample2d", help="2D samples from a prior (Karras/EDM Heun sampler) as a PNG grid")
    s2.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    s2.add_argument("--prior", help="toy | closed-form | sd | unet2d (default: the built-in toy prior, or detected from --model)")
    s2.add_argument("--model", help="diffusers folder, cached Hub id or .safetensors file")
    s2.add_argument("--model-config", help="for a single file: the base model's folder or cached id")
    s2.add_argument("--resolution", type=int, help="image size for the closed-form prior")
    s2.add_argument("--n", type=int, default=16, help="number of samples")
    s2.add_argument("--steps", type=int, default=30, help="Heun steps")
    s2.add_argument("--sigma-min", type=float, help="smallest σ (default: the prior's table)")
    s2.add_argument("--sigma-max", type=float, help="largest σ (default: the prior's table)")
    s2.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the prior's 2D sampling scale)")
    s2.add_argument("--seed", type=int, default=0)
    s2.add_argument("--device", default="auto")
    s2.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling of the PNG")
    s2.add_argument("--out", default="samples.png")
    add_config_flags(s2, only=SAMPLE2D_MODEL_FLAGS)
    s2.set_defaults(func=cmd_sample2d)

    pr = sub.add_parser("prior", help="build the toy-world dataset and train the learned toy prior")
    prs = pr.add_subparsers(dest="prior_command", required=True)
    from .cameras import VIEW_SCHEMES
    from .prior_training import DatasetConfig, ModelConfig, TrainConfig
    pd = prs.add_parser("dataset", help="render every toy shape from random training cameras")
    pd.add_argument("--out", default="toyprior", help="folder for dataset.pt")
    pd.add_argument("--quiet", action="store_true")
    _dataclass_args(pd, DatasetConfig)
    pd.set_defaults(func=cmd_prior_dataset)
    pt = prs.add_parser("train", help="train (or resume) the text-conditioned toy prior; writes model/ in diffusers format")
    pt.add_argument("--data", default="toyprior", help="dataset folder or .pt from `sjc prior dataset`")
    pt.add_argument("--out", default="toyprior/train", help="training folder (resumed if it holds state.pt)")
    pt.add_argument("--channels", type=int, nargs="+", help=f"U-Net block widths (default {' '.join(map(str, ModelConfig.channels))})")
    pt.add_argument("--norm-groups", type=int, default=ModelConfig.norm_groups,
                    help=f"GroupNorm groups; every width a multiple (default {ModelConfig.norm_groups})")
    pt.add_argument("--views", default=ModelConfig.views, choices=sorted(VIEW_SCHEMES),
                    help="view-prompt scheme of the captions: reference (front, side, back, overhead), fine (45° sectors, left and right apart) or fine-bands (fine + low/mid/top: the shipped model's)")
    pt.add_argument("--text-width", type=int, default=ModelConfig.text_width,
                    help=f"text encoder width, a multiple of 4 (default {ModelConfig.text_width})")
    pt.add_argument("--text-layers", type=int, default=ModelConfig.text_layers,
                    help=f"text encoder layers (default {ModelConfig.text_layers})")
    pt.add_argument("--prediction-type", default=ModelConfig.prediction_type, choices=["epsilon", "v_prediction"],
                    help=f"what the U-Net predicts (default {ModelConfig.prediction_type})")
    pt.add_argument("--stop-after", type=int, help="end this call after N steps (checkpointed; rerun to continue)")
    pt.add_argument("--quiet", action="store_true")
    _dataclass_args(pt, TrainConfig)
    pt.set_defaults(func=cmd_prior_train)

    pc = prs.add_parser("check", help="2D sample accuracy on trained and held-out objects (nearest true render)")
    pc.add_argument("--model", help="toy prior folder (default: the built-in one)")
    pc.add_argument("--data", default="toyprior", help="dataset from `sjc prior dataset` (the reference renders)")
    pc.add_argument("--views", type=int, help="reference views per shape (default: 500; all with --view)")
    pc.add_argument("--n", type=int, default=8, help="samples per object")
    pc.add_argument("--steps", type=int, default=20, help="Heun steps")
    pc.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the prior's 2D sampling scale)")
    pc.add_argument("--seed", type=int, default=0)
    pc.add_argument("--view", nargs="+", help="view prompts to sample with (e.g. 'front', or all): --n samples per "
                                              "view, each compared with its view's renders only (default: no prefix)")
    pc.add_argument("--out", default="outputs/prior-check", help="path prefix for .md, .json and PNG grids")
    pc.set_defaults(func=cmd_prior_check)

    p2 = sub.add_parser("paas2d", help="the paper's 2D experiment: optimise an image from a flat start with PAAS vs the naive score")
    p2.add_argument("prompts", nargs="*", default=[DEFAULT_PROMPT])
    p2.add_argument("--methods", nargs="+", default=["paas", "naive"], choices=["paas", "paas-plain", "naive", "sds"])
    p2.add_argument("--model", help="toy prior folder (default: the built-in one)")
    p2.add_argument("--data", help="dataset from `sjc prior dataset`: also label each result by its nearest true render")
    p2.add_argument("--steps", type=int, default=500)
    p2.add_argument("--lr", type=float, default=0.05, help="Adamax learning rate on the pixels")
    p2.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the prior's 2D sampling scale)")
    p2.add_argument("--seed", type=int, default=0)
    p2.add_argument("--out", default="paas2d.png")
    p2.set_defaults(func=cmd_paas2d)

    b = sub.add_parser("bench", help="time SJC steps: the fast vs the dense renderer (default), the SD prior, or the U-Net layout")
    b.add_argument("suite", nargs="?", default="renderer", choices=["renderer", "sweep", "sd", "unet"],
                   help="renderer: both renderers over a whole run at named configurations; sweep: step time "
                        "against grid size and resolution; sd: the optimised vs fp32 SD step; unet: the toy "
                        "prior's U-Net call and SJC step in the default vs the channels-last layout")
    b.add_argument("--configs", nargs="+", choices=["sd", "toy"],
                   help="renderer suite: the reference SD configuration (stand-in prior) and the toy default "
                        "(default: both)")
    b.add_argument("--device", help="sd suite: where the step runs (default: cuda when visible, else cpu)")
    b.add_argument("--steps", type=int, help="renderer: optimisation steps of the run (default per config); sweep: steps that train each field before timing (default 300); sd: timed steps; unet: timed steps and U-Net calls")
    b.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    b.add_argument("--threads", type=int, help="torch CPU threads")
    b.add_argument("--grid", type=int, help="sd suite: the field's grid size (default 100)")
    b.add_argument("--latent", type=int, help="sd suite: the latent render's size (default 64)")
    b.add_argument("--tiny", action="store_true", help="sd suite: a tiny U-Net instead of SD 1.5's (CPU smoke test)")
    b.add_argument("--plot", help="sweep suite: write a PNG plot here (needs matplotlib)")
    b.add_argument("--out", help="also write the JSON here")
    b.set_defaults(func=cmd_bench)
    return p


def torch_oom():
    import torch
    return torch.OutOfMemoryError


def check_finite(args: argparse.Namespace) -> None:
    """Every number on the command line is finite: nan or ±inf is one line naming its flag, never a NaN result."""
    for dest, value in vars(args).items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise SJCError(f"--{dest.replace('_', '-')} must be a finite number, got {v}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_finite(args)
        args.func(args)
    except SJCError as e:
        print(f"sjc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(args, e)
    except Exception as e:
        if interrupt_behind(e):
            return _interrupted(args, interrupt_behind(e))
        if isinstance(e, torch_oom()):
            print(f"sjc: error: out of GPU memory ({str(e).splitlines()[0][:80]}); try --offload, --attention-slicing, "
                  "--half, or a smaller --grid-size / --resolution", file=sys.stderr)
            return 2
        raise
    return 0


def _interrupted(args, e: BaseException) -> int:
    """One line for Ctrl-C: what was kept and how to go on."""
    hint = getattr(e, "hint", None)   # a run's own (sjc.pipeline.RunInterrupted)
    if hint is None:
        hint = {"eval": f"finished cells are kept in {getattr(args, 'out', '')}.partial.jsonl, the same command resumes",
                "generate": "continue with 'sjc resume <run folder>' once it holds a checkpoint"}.get(
            "generate" if args.command == "resume" else args.command)
    print(f"sjc: interrupted{': ' + hint if hint else ''}", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())

"""The command line: sjc generate | resume | render | export | batch | score | eval | sample2d | prior | paas2d |
bench.

Every flag is a field of a settings dataclass (the run's RunConfig, or a command's own options below), turned
into flags, read back and held to its bounds by sjc.settings; each command is a small function over the library.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .atomic import write_text
from .config import RunConfig
from .errors import SJCError, interrupt_behind
from .settings import add_flags, apply_flags, from_flags, setting

DEFAULT_PROMPT = "a blue sphere"
DEVICE_HELP = ("where to load the run: auto, cpu, cuda or cuda:N (default: the run's own device, or the CPU "
               "where the GPU it was trained on is not here)")
SEED = dict(min=0, lt=2 ** 63)   # what torch's generators take


# ---------------------------------------------------------------------------------------------- a run


@dataclass
class GenerateOptions:
    prompt: Optional[str] = setting(None, f'text prompt (default: the --config\'s prompt, else "{DEFAULT_PROMPT}")',
                                    positional=True, nargs="?")
    config: Optional[str] = setting(None, "start from a saved config.json (flags still override it)")
    quiet: bool = setting(False, "no progress bar", switch=True)


def cmd_generate(a) -> None:
    from .pipeline import generate
    from .priors import refuse_unread_flags

    opts = from_flags(GenerateOptions, a)
    cfg = RunConfig.load(Path(opts.config)) if opts.config else RunConfig()
    if opts.prompt is not None or not cfg.prompt:
        cfg.prompt = DEFAULT_PROMPT if opts.prompt is None else opts.prompt
    given = apply_flags(cfg, a)
    cfg.forget_resolved(given)   # what the config's run filled in and these flags change is derived anew
    refuse_unread_flags(cfg, given)
    out_dir, metrics = generate(cfg, progress=not opts.quiet)
    _report(out_dir, metrics)


@dataclass
class ResumeOptions:
    run_dir: str = setting("", "the run folder", positional=True)
    steps: Optional[int] = setting(None, "raise the step budget (train longer)", min=1)
    quiet: bool = setting(False, "no progress bar", switch=True)


RESUME_OUTPUT_FLAGS = ("ckpt_every", "preview_every", "video", "mesh")   # what resume may change: never the result


def cmd_resume(a) -> None:
    from .pipeline import resume

    opts = from_flags(ResumeOptions, a)
    output = {k: getattr(a, k) for k in RESUME_OUTPUT_FLAGS if getattr(a, k) is not None}
    out_dir, metrics = resume(Path(opts.run_dir), progress=not opts.quiet, steps=opts.steps, output=output)
    _report(out_dir, metrics)


@dataclass
class RenderOptions:
    run_dir: str = setting("", "the run folder", positional=True)
    subpixel: int = setting(1, "rays per pixel side, averaged (sharper final render)", min=1)
    out: Optional[str] = setting(None, "video path (default: inside the run folder)")
    device: Optional[str] = setting(None, DEVICE_HELP)


def cmd_render(a) -> None:
    from .export import VIDEO_SUFFIXES
    from .pipeline import load_run, render_video

    opts = from_flags(RenderOptions, a)
    if opts.out and Path(opts.out).suffix.lower() not in VIDEO_SUFFIXES:
        raise SJCError(f"--out must name a {'/'.join(VIDEO_SUFFIXES)} file (an H.264 video), got {opts.out}")
    run_dir = Path(opts.run_dir)
    name = f"turntable_subpixel{opts.subpixel}.mp4" if opts.subpixel > 1 else "turntable.mp4"
    path = Path(opts.out) if opts.out else run_dir / name
    if opts.out:   # before any frame is rendered
        check_writable(path)
    run = load_run(run_dir, device=opts.device, field_only=True)
    if not opts.out:   # the run folder itself, once it is known to hold a run
        check_writable(path)
    print(render_video(run, path, subpixel=opts.subpixel))


@dataclass
class ExportOptions:
    run_dir: str = setting("", "the run folder", positional=True)
    format: Optional[str] = setting(None, "mesh format (default: --out's suffix, else glb)",
                                    choices=("glb", "ply", "obj"))
    level: Optional[float] = setting(None, "density level of the surface (default: the evaluation level, where one "
                                           "voxel's optical depth is 0.2: 0.2·(grid size − 1)/2, 4.7 at the toy "
                                           "default's 48³ grid)")
    out: Optional[str] = setting(None, "mesh file (default: mesh.<format> in the run folder, replacing the one there)")
    device: Optional[str] = setting(None, DEVICE_HELP)


def cmd_export(a) -> None:
    from .export import MESH_FORMATS, export_mesh
    from .pipeline import load_run, run_mesh

    opts = from_flags(ExportOptions, a)
    out = Path(opts.out) if opts.out else None
    suffix = out.suffix.lstrip(".").lower() if out else None
    fmt = opts.format or suffix or "glb"
    if out is not None and suffix != fmt or fmt not in MESH_FORMATS:
        raise SJCError(f"--out must name a .glb, .ply or .obj file (matching --format if given), got {opts.out}")
    if out is not None:   # before the run loads
        check_writable(out, "--out")
    run = load_run(Path(opts.run_dir), device=opts.device, field_only=True)   # a mistyped folder is named, not created
    path = out or Path(opts.run_dir) / f"mesh.{fmt}"
    if out is None:
        check_writable(path, "--out")
    print(export_mesh(run_mesh(run, opts.level), path, fmt))


def _report(out_dir: Path, metrics: dict) -> None:
    from .metrics import FINE_SUPERSAMPLE

    gt = metrics.get("ground_truth")
    fine = f" ({gt['iou_fine']:.3f} sampled {FINE_SUPERSAMPLE}× finer)" if gt and "iou_fine" in gt else ""
    extra = f"; IoU {gt['iou']:.3f}{fine}, PSNR {gt['psnr']:.2f} dB against the true object" if gt else ""
    print(f"done: {metrics['steps']} steps in {metrics.get('train_seconds', 0):.1f} s{extra}\noutputs in {out_dir}/")


# ---------------------------------------------------------------------------------------------- batch

# Run settings a batch sets per run (its folder, its seed) or never does (it replaces no run): no flags there.
BATCH_FIXED_FIELDS = ("out_dir", "seed", "overwrite")


@dataclass
class BatchOptions:
    prompts: str = setting("", "a text file (one prompt a line, # comments), or .jsonl / .csv rows with a prompt and "
                               "any run settings (steps, seed, model, method, ...)", positional=True)
    seeds: list[int] = setting(factory=lambda: [1], help="one number N: seeds 0 … N−1 of every prompt; several: "
                                                         "those seeds (a row that sets its seed runs that one)",
                               min=0, lt=2 ** 62)
    out_dir: str = setting("outputs/batch", "the batch's folder: <prompt>/seed<N> per run, batch.md and batch.json")
    address: Optional[str] = setting(None, "a Ray cluster to join (default: $RAY_ADDRESS, else a local cluster "
                                           "started for the batch)")
    cpus_per_run: int = setting(1, "CPU threads (Ray CPUs) per run where the prior runs on the CPU; on CUDA each "
                                   "run takes one GPU", min=1)
    retries: int = setting(3, "times Ray retries a run whose worker died (it resumes from its last checkpoint)",
                           min=0)
    select: str = setting("best", "best: keep each prompt's seed with the highest prior score (sjc score); none",
                          choices=("best", "none"))
    quiet: bool = setting(False, "no progress bars", switch=True)

    def relations(self):
        return [(self.seeds != [0], "--seeds 0 runs nothing: give a number of seeds (1 or more), or the seeds")]

    def seed_list(self) -> list[int]:
        return list(range(self.seeds[0])) if len(self.seeds) == 1 else list(dict.fromkeys(self.seeds))


def cmd_batch(a) -> None:
    from .batch import check_address, plan, read_prompts, run_batch
    from .priors import refuse_unread_flags

    opts = from_flags(BatchOptions, a)
    base = RunConfig(prompt="batch")
    refuse_unread_flags(base, apply_flags(base, a))
    rows = read_prompts(Path(opts.prompts))
    runs = plan(base, rows, opts.seed_list(), Path(opts.out_dir), source=opts.prompts)
    check_address(opts.address)   # before anything is made
    check_writable(Path(opts.out_dir) / "batch.json", "--out-dir")
    data = run_batch(runs, Path(opts.out_dir), opts.address, opts.cpus_per_run, opts.retries, opts.select,
                     progress=not opts.quiet, source=opts.prompts)
    print(Path(opts.out_dir, "batch.md").read_text())
    print(f"wrote {Path(opts.out_dir) / 'batch.md'} and batch.json: {data['finished']} of {len(runs)} runs finished"
          + (f", {data['failed']} failed" if data["failed"] else ""))
    if data["failed"]:
        raise SJCError(f"{data['failed']} of {len(runs)} runs failed (see batch.md); the same command retries them "
                       f"and skips the finished ones")


@dataclass
class ScoreOptions:
    run_dirs: list[str] = setting(factory=list, help="finished run folders", positional=True, nargs="+")
    device: Optional[str] = setting(None, DEVICE_HELP)


def cmd_score(a) -> None:
    import json

    from .pipeline import load_run
    from .score import prior_score

    opts = from_flags(ScoreOptions, a)
    for d in map(Path, opts.run_dirs):
        s = prior_score(load_run(d, device=opts.device, field_only=True))
        write_text(d / "score.json", json.dumps(s, indent=2) + "\n")
        print(f"{s['score']:.5f}  {d}  (worst view {s['worst_view']:.5f})")


# ---------------------------------------------------------------------------------------------- eval

# Run settings that `sjc eval` sets per cell (method, seed) or never uses (it writes no run folder): no flags there.
EVAL_FIXED_FIELDS = ("method", "seed", "out_dir", "ckpt_every", "preview_every", "video", "mesh", "overwrite")


@dataclass
class EvalOptions:
    prompts: Optional[list[str]] = setting(None, "toy prompts (default: 12 built-in ones, 6 trained and 6 held out "
                                                 "of the toy prior)")
    variants: Optional[list[str]] = setting(None, "method[:noview] names, e.g. paas paas:noview sds naive oracle")
    seeds: int = setting(1, "seeds per cell (0 … n-1)", min=1)
    jobs: int = setting(1, "parallel processes", min=1)
    out: str = setting("outputs/eval", "output path prefix for .md and .json (the shipped tables: --out docs/eval)")
    reuse: Optional[list[str]] = setting(None, "earlier evals' .json files: their cells made with the same settings "
                                               "are not trained again", metavar="JSON")
    seed: Optional[int] = setting(None, argparse.SUPPRESS)   # caught: it would read as --seeds


def cmd_eval(a) -> None:
    from .evaluate import DEFAULT_EVAL_PROMPTS, DEFAULT_VARIANTS, run_eval
    from .priors import refuse_unread_flags

    if a.seed is not None:
        raise SJCError(f"sjc eval runs seeds 0 … N−1 of every cell: give --seeds N, not --seed {a.seed}")
    opts = from_flags(EvalOptions, a)
    base = RunConfig(prompt="eval")
    refuse_unread_flags(base, apply_flags(base, a))
    summary = run_eval(base, opts.prompts or DEFAULT_EVAL_PROMPTS, opts.variants or DEFAULT_VARIANTS,
                       list(range(opts.seeds)), Path(opts.out), jobs=opts.jobs, reuse=opts.reuse or ())
    print(Path(f"{opts.out}.md").read_text())   # a prefix, not a file name: "guidance-7.5" keeps its ".5"
    print(f"wrote {opts.out}.md and .json ({sum(s['seeds'] for s in summary)} cells)")


# ---------------------------------------------------------------------------------------------- 2D


SAMPLE2D_RUN_FLAGS = ("prior", "model", "model_config", "half", "attention_slicing", "offload",
                      "compile", "channels_last")   # how the model is found and runs, as in generate


@dataclass
class Sample2DOptions:
    prompt: str = setting(DEFAULT_PROMPT, "text prompt", positional=True, nargs="?")
    n: int = setting(16, "number of samples", min=1)
    steps: int = setting(30, "Heun steps", min=1)
    sigma_min: Optional[float] = setting(None, "smallest σ (default: the prior's table)", gt=0)
    sigma_max: Optional[float] = setting(None, "largest σ (default: the prior's table)", gt=0)
    guidance_scale: Optional[float] = setting(None, "classifier-free guidance (default: the prior's 2D sampling scale)",
                                              min=0)
    seed: int = setting(0, "random seed", **SEED)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    scale: int = setting(4, "nearest-neighbour upscaling of the PNG", min=1)
    resolution: Optional[int] = setting(None, "image size of the closed-form prior (default 32; a learned prior "
                                              "makes images of its own size)", min=1)
    out: str = setting("samples.png", "the PNG grid")


def cmd_sample2d(a) -> None:
    import torch

    from .build import resolve_device
    from .export import save_image
    from .priors import load_prior, refuse_unread_flags
    from .sample2d import heun_sample

    opts = from_flags(Sample2DOptions, a)
    cfg = RunConfig(prompt=opts.prompt)
    given = apply_flags(cfg, argparse.Namespace(**{k: getattr(a, k) for k in SAMPLE2D_RUN_FLAGS}))
    cfg.render.resolution = opts.resolution
    cfg.validate()
    refuse_unread_flags(cfg, given)
    check_writable(Path(opts.out))
    device = resolve_device(opts.device)
    prior = load_prior(cfg, device)
    gen = torch.Generator(device).manual_seed(opts.seed)
    x = heun_sample(prior, opts.n, opts.steps, opts.sigma_min, opts.sigma_max, opts.prompt, opts.guidance_scale, gen,
                    device, progress=sys.stderr.isatty())
    print(save_image(Path(opts.out), prior.decode(x), scale=opts.scale))


@dataclass
class PriorDatasetOptions:
    out: str = setting("toyprior", "folder for dataset.pt")
    quiet: bool = setting(False, "no progress bar", switch=True)


def cmd_prior_dataset(a) -> None:
    from .prior_training import DatasetConfig, build_dataset

    opts, cfg = from_flags(PriorDatasetOptions, a), from_flags(DatasetConfig, a)
    check_writable(Path(opts.out) / "dataset.pt")
    print(build_dataset(cfg, Path(opts.out), progress=not opts.quiet))


@dataclass
class PriorTrainOptions:
    data: str = setting("toyprior", "dataset folder or .pt from `sjc prior dataset`")
    out: str = setting("toyprior/train", "training folder (resumed if it holds state.pt)")
    stop_after: Optional[int] = setting(None, "end this call after N steps (checkpointed; rerun to continue)", min=1)
    quiet: bool = setting(False, "no progress bar", switch=True)


def cmd_prior_train(a) -> None:
    from .prior_training import TrainConfig, UNetConfig, dataset_file, train_prior

    opts, cfg, model_cfg = from_flags(PriorTrainOptions, a), from_flags(TrainConfig, a), from_flags(UNetConfig, a)
    dataset_file(Path(opts.data))   # then the folder, which the check makes: nothing is left behind by bad input
    check_writable(Path(opts.out) / "state.pt")
    folder = train_prior(Path(opts.data), Path(opts.out), cfg, model_cfg, progress=not opts.quiet,
                         stop_after=opts.stop_after)
    print(folder or f"stopped after {opts.stop_after} steps; run the same command again to continue")


@dataclass
class PriorCheckOptions:
    model: Optional[str] = setting(None, "toy prior folder (default: the built-in one)")
    data: str = setting("toyprior", "dataset from `sjc prior dataset` (the reference renders)")
    views: Optional[int] = setting(None, "reference views per shape (default: 500; all with --view)", min=1)
    n: int = setting(8, "samples per object", min=1)
    steps: int = setting(20, "Heun steps", min=1)
    guidance_scale: Optional[float] = setting(None, "classifier-free guidance (default: the prior's 2D sampling scale)",
                                              min=0)
    seed: int = setting(0, "random seed", **SEED)
    view: Optional[list[str]] = setting(None, "view prompts to sample with (e.g. 'front', or all): --n samples per "
                                              "view, each compared with its view's renders only (default: no prefix)")
    out: str = setting("outputs/prior-check", "path prefix for .md, .json and PNG grids")


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

    o = from_flags(PriorCheckOptions, a)
    out = Path(o.out)   # a prefix, not a file name: "guidance-7.5" keeps its ".5"
    check_writable(Path(f"{out}.json"))
    data = load_dataset(Path(o.data))
    prior = _toy_prior(o.model)
    views = list(prior.views.labels) if o.view == ["all"] else o.view or [None]
    for v in views:
        if v and v not in prior.views.labels:
            raise SJCError(f"--view {v!r} is not a view of this prior's {prior.views.name!r} scheme: use all or "
                           f"one of {', '.join(prior.views.labels)}")
    check_dataset_fits(data, prior, o.data)
    labels = prior.views.index(data["azimuth"], data["elevation"]) if o.view else None
    clf = NearestRender(data["shaded"], data["background"], o.views or (None if o.view else 500), labels)
    for v in views if o.view else ():   # a shape with no render of a view could never be the answer for it
        seen_in = clf.view_labels.view(clf.n_shapes, clf.n_views) == prior.views.labels.index(v)
        if not seen_in.any(1).all():
            raise SJCError(f"--view {v!r}: the dataset's first {clf.n_views} views of some shapes include none from "
                           f"that view, so its samples cannot be judged; raise --views, or build the dataset with more "
                           f"views (sjc prior dataset --views)")
    held = [toyworld.ToyObject(s, c) for s, c in HELD_OUT]
    trained = [obj for obj in toyworld.ALL_OBJECTS if (obj.shape, obj.colour) not in HELD_OUT]
    scale = prior.sampling_guidance_scale if o.guidance_scale is None else o.guidance_scale
    result = {"model": str(o.model or "built-in"), "samples_per_object": o.n * len(views), "heun_steps": o.steps,
              "guidance_scale": scale, "views": views}
    seen = (f", {o.n} per view prompt ({', '.join(views)}), each compared with its view's renders only" if o.view
            else "")
    lines = [(f"# 2D sample accuracy of the toy prior ({o.n * len(views)} Heun samples per object{seen}, "
              f"{o.steps} steps, guidance {scale})"), "",
             "| set | objects | shape and colour right | shape right | colour right |", "|---|---|---|---|---|"]

    def mean(rows):
        return {k: sum(r[k] for r in rows) / len(rows) for k in ("correct", "shape_ok", "colour_ok")}

    for name, objs in (("trained", trained), ("held out", held)):
        rows, imgs = sample_accuracy(prior, clf, objs, o.n, o.steps, o.guidance_scale, o.seed, views,
                                     progress=sys.stderr.isatty())
        m = mean(rows)
        result[name] = {"mean": m, "objects": rows}
        if len(views) > 1:
            result[name]["by_view"] = {v: mean([r for r in rows if r["view"] == v]) for v in views}
        lines.append(f"| {name} | {len(objs)} | {m['correct']:.1%} | {m['shape_ok']:.1%} | {m['colour_ok']:.1%} |")
        save_image(out.parent / f"{out.name}-{name.replace(' ', '-')}.png", imgs[::max(1, o.n // 4)][:32 * 4],
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


@dataclass
class Paas2DOptions:
    prompts: list[str] = setting(factory=lambda: [DEFAULT_PROMPT], help="toy prompts", positional=True, nargs="*")
    methods: list[str] = setting(factory=lambda: ["paas", "naive"], help="score steps to compare",
                                 choices=("paas", "paas-plain", "naive", "sds"))
    model: Optional[str] = setting(None, "toy prior folder (default: the built-in one)")
    data: Optional[str] = setting(None, "dataset from `sjc prior dataset`: also label each result by its nearest "
                                        "true render")
    steps: int = setting(500, "optimisation steps", min=1)
    lr: float = setting(0.05, "Adamax learning rate on the pixels", gt=0)
    guidance_scale: Optional[float] = setting(None, "classifier-free guidance (default: the prior's 2D sampling scale)",
                                              min=0)
    seed: int = setting(0, "random seed", **SEED)
    out: str = setting("paas2d.png", "the PNG grid (the rows go beside it as .json)")


def cmd_paas2d(a) -> None:
    import json

    import torch

    from .check2d import NearestRender, optimise_image
    from .export import save_image
    from .prior_training import load_dataset

    o = from_flags(Paas2DOptions, a)
    out = Path(o.out)
    if out.suffix.lower() != ".png":   # the rows go beside it as .json
        raise SJCError(f"--out must name a .png file (the rows are written beside it as .json), got {o.out}")
    check_writable(out)
    prior = _toy_prior(o.model)
    data = load_dataset(Path(o.data)) if o.data else None
    if data is not None:   # labelling needs toy-world prompts and renders of the prior's size: checked now, not late
        from . import toyworld
        truths = {p: toyworld.parse_prompt(p)[1] for p in o.prompts}
        check_dataset_fits(data, prior, o.data)
    clf = NearestRender(data["shaded"], data["background"]) if data is not None else None
    imgs, rows = [], []
    for prompt in o.prompts:
        for method in o.methods:
            x = optimise_image(prior, prompt, method, o.steps, o.lr, o.guidance_scale, o.seed,
                               progress=sys.stderr.isatty())
            imgs.append(x)
            row = {"prompt": prompt, "method": method}
            if clf is not None:
                obj = truths[prompt]
                s, c, err = clf.classify(x)
                row.update(right=bool(list(toyworld.SHAPES)[s] == obj.shape and list(toyworld.COLOURS)[c] == obj.colour),
                           nearest_rmse=round(float(err), 4))
            rows.append(row)
            print(json.dumps(row), flush=True)
    save_image(out, torch.cat(imgs), scale=4, ncol=len(o.methods))
    write_text(out.with_suffix(".json"), json.dumps(rows, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- bench


@dataclass
class BenchOptions:
    suite: str = setting("renderer", "renderer: both renderers over a whole run at named configurations; sweep: step "
                                     "time against grid size and resolution; sd: the optimised vs fp32 SD step; unet: "
                                     "the toy prior's U-Net call and SJC step in the default vs the channels-last layout",
                         positional=True, nargs="?", choices=("renderer", "sweep", "sd", "unet"))
    configs: Optional[list[str]] = setting(None, "renderer suite: the reference SD configuration (stand-in prior) and "
                                                 "the toy default (default: both)", choices=("sd", "toy"),
                                           suite="renderer")
    device: Optional[str] = setting(None, "sd suite: where the step runs (default: cuda when visible, else cpu)",
                                    suite="sd")
    steps: Optional[int] = setting(None, "renderer: optimisation steps of the run (default per config); sweep: steps "
                                         "that train each field before timing (default 300); sd: timed steps; unet: "
                                         "timed steps and U-Net calls", min=1)
    repeats: int = setting(5, "timed repeats (median reported)", min=1)
    threads: Optional[int] = setting(None, "torch CPU threads", min=1)
    grid: Optional[int] = setting(None, "sd suite: the field's grid size (default 100)", min=1, suite="sd")
    latent: Optional[int] = setting(None, "sd suite: the latent render's size (default 64)", min=1, suite="sd")
    tiny: bool = setting(False, "sd suite: a tiny U-Net instead of SD 1.5's (CPU smoke test)", switch=True, suite="sd")
    plot: Optional[str] = setting(None, "sweep suite: write a PNG plot here (needs matplotlib)", suite="sweep")
    out: Optional[str] = setting(None, "also write the JSON here")

    def relations(self):   # a flag the suite would ignore is a mistake
        import dataclasses
        return [(getattr(self, f.name) in (None, False) or self.suite == f.metadata["suite"],
                 f"--{f.name} is for the {f.metadata['suite']} suite only (this is {self.suite}): sjc bench "
                 f"{f.metadata['suite']} --{f.name} ...") for f in dataclasses.fields(self) if "suite" in f.metadata]


def cmd_bench(a) -> None:
    import json

    import torch

    from .build import resolve_device

    o = from_flags(BenchOptions, a)
    if o.plot:   # fail before the sweep, not after it
        check_writable(Path(o.plot), "--plot")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SJCError("--plot needs matplotlib, which is not installed: pip install matplotlib") from None
    if o.out:
        check_writable(Path(o.out))
    if o.threads:
        torch.set_num_threads(o.threads)
    if o.suite == "sd":
        from .bench import bench_sd
        sizes = {k: v for k, v in (("latent", o.latent), ("grid", o.grid)) if v is not None}   # else bench_sd's own
        res = bench_sd(str(resolve_device(o.device or "auto")), steps=o.steps or 20, repeats=o.repeats,
                       full_size=not o.tiny, **sizes)
    elif o.suite == "unet":
        from .bench import bench_unet_layout
        res = {"unet": bench_unet_layout(calls=o.steps or 40, steps=o.steps or 40, repeats=o.repeats)}
    elif o.suite == "sweep":
        from .bench import plot_sweep, sweep_renderers
        res = {"sweep": sweep_renderers(rounds=o.repeats, steps=o.steps or 300)}
        if o.plot:
            plot_sweep(res["sweep"], o.plot)
    else:
        from .bench import bench_renderers
        res = {"renderer": [bench_renderers(c, o.steps, rounds=o.repeats) for c in o.configs or ("sd", "toy")]}
    text = json.dumps(res, indent=2)
    if o.out:
        write_text(Path(o.out), text + "\n")
    print(text)


def check_writable(path: Path, flag: Optional[str] = "--out") -> None:
    """Fail now, with one line naming `flag`, if an output file's folder cannot be written or the file is a folder."""
    from .run_folder import prepare_out_dir
    if path.is_dir():
        raise SJCError(f"cannot write {path}: it is a folder, not a file" + (f"; give a file path with {flag}" if flag else ""))
    prepare_out_dir(path.parent if str(path.parent) else Path("."), flag)


# ---------------------------------------------------------------------------------------------- the parser


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (and exit status 2), like sjc's own."""

    def error(self, message: str):
        self.exit(2, f"sjc: error: {message} (see {self.prog} --help)\n")


def _command(sub, name: str, help: str, func, *options, run_flags: Optional[dict] = None, **kw):
    """A subcommand whose flags come from settings dataclasses: `options` and, if run_flags, RunConfig's."""
    p = sub.add_parser(name, help=help, **kw)
    for cls in options:
        add_flags(p, cls)
    if run_flags is not None:
        add_flags(p, RunConfig, groups=True, **run_flags)
    p.set_defaults(func=func, parser=p)
    return p


def build_parser() -> argparse.ArgumentParser:
    from .prior_training import DatasetConfig, TrainConfig, UNetConfig
    from .priors import defaults_text

    p = Parser(prog="sjc",
               description="Score Jacobian Chaining: text prompt → 3D voxel field, video and mesh.")
    sub = p.add_subparsers(dest="command", required=True)
    _command(sub, "generate", "lift a prompt into a 3D field (default: the built-in toy-world prior)", cmd_generate,
             GenerateOptions, run_flags={}, epilog=defaults_text())
    _command(sub, "resume", "continue an interrupted run from its folder, exactly", cmd_resume, ResumeOptions,
             run_flags={"only": RESUME_OUTPUT_FLAGS})
    _command(sub, "render", "render a run's turntable video", cmd_render, RenderOptions)
    _command(sub, "export", "export a run's mesh", cmd_export, ExportOptions)
    _command(sub, "eval", "score prompts × method variants against the toy world's true objects", cmd_eval,
             EvalOptions, run_flags={"exclude": EVAL_FIXED_FIELDS}, epilog=defaults_text())
    _command(sub, "batch", "many prompts × seeds on a Ray cluster, resumable; the best seed of each prompt kept",
             cmd_batch, BatchOptions, run_flags={"exclude": BATCH_FIXED_FIELDS}, epilog=defaults_text())
    _command(sub, "score", "score finished runs by how well their own prior denoises their renders (higher: "
                           "better)", cmd_score, ScoreOptions)
    _command(sub, "sample2d", "2D samples from a prior (Karras/EDM Heun sampler) as a PNG grid", cmd_sample2d,
             Sample2DOptions, run_flags={"only": SAMPLE2D_RUN_FLAGS})
    pr = sub.add_parser("prior", help="build the toy-world dataset and train the learned toy prior")
    prs = pr.add_subparsers(dest="prior_command", required=True)
    _command(prs, "dataset", "render every toy shape from random training cameras", cmd_prior_dataset,
             PriorDatasetOptions, DatasetConfig)
    _command(prs, "train", "train (or resume) the text-conditioned toy prior; writes model/ in diffusers format",
             cmd_prior_train, PriorTrainOptions, UNetConfig, TrainConfig)
    _command(prs, "check", "2D sample accuracy on trained and held-out objects (nearest true render)", cmd_prior_check,
             PriorCheckOptions)
    _command(sub, "paas2d", "the paper's 2D experiment: optimise an image from a flat start with PAAS vs the naive "
                            "score", cmd_paas2d, Paas2DOptions)
    _command(sub, "bench", "time SJC steps: the fast vs the dense renderer (default), the SD prior, or the U-Net layout",
             cmd_bench, BenchOptions)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:   # named by the subcommand that was given them, whose --help lists what it takes
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except SJCError as e:
        print(f"sjc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(args, e)
    except Exception as e:
        if interrupt_behind(e):
            return _interrupted(args, interrupt_behind(e))
        import torch
        if isinstance(e, torch.OutOfMemoryError):
            print(f"sjc: error: out of GPU memory ({str(e).splitlines()[0][:80]}); try --offload, --attention-slicing, "
                  "--half, or a smaller --grid-size / --resolution", file=sys.stderr)
            return 2
        raise
    return 0


def _interrupted(args, e: BaseException) -> int:
    """One line for Ctrl-C: what was kept and how to go on."""
    hint = getattr(e, "hint", None)   # a run folder's own (sjc.run_folder.RunInterrupted)
    if hint is None and args.command == "eval":
        out = args.out or EvalOptions.out   # the field's default where --out was not given
        hint = f"finished cells are kept in {out}.partial.jsonl, the same command resumes"
    print(f"sjc: interrupted{': ' + hint if hint else ''}", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())

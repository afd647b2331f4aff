"""The learned toy-world prior: dataset, tokenizer, training (resumable), loading, 2D checks, the shipped weights."""

import csv
import json
import math
from dataclasses import replace

import pytest
import torch

from sjc import toyworld
from sjc.cameras import FINE_BANDS_VIEWS, FINE_VIEWS, REFERENCE_VIEWS, orbit_cameras, view_label
from sjc.check2d import NearestRender, optimise_image
from sjc.cli import main
from sjc.errors import SJCError
from sjc.prior_training import (HELD_OUT, SHAPE_NAMES, DatasetConfig, UNetConfig, TrainConfig, build_dataset,
                                captions, load_dataset, sample_timesteps, training_pairs, train_prior,
                                word_tokenizer)
from sjc.priors.text_unet import BUILTIN_TOY_MODEL, PixelTextPrior

TINY_MODEL = UNetConfig(resolution=16, channels=(32, 64), text_width=32, norm_groups=32)
TINY_TRAIN = dict(steps=6, batch=4, warmup=2, checkpoint_every=2, sample_every=3, log_every=1,
                  precision="float32", weights_dtype="float32")   # the mechanics in float32 (bfloat16: its own test)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toydata")
    build_dataset(DatasetConfig(views=6, resolution=16), folder, progress=False)
    return folder


def test_held_out_set_leaves_every_shape_and_colour_in_training():
    pairs = training_pairs()
    assert len(pairs) == len(toyworld.ALL_OBJECTS) - len(HELD_OUT) == 63
    names = {(SHAPE_NAMES[s], list(toyworld.COLOURS)[c]) for s, c in pairs}
    assert not names & set(HELD_OUT)
    assert {s for s, _ in names} == set(toyworld.SHAPES) and {c for _, c in names} == set(toyworld.COLOURS)


@pytest.mark.parametrize("views", [REFERENCE_VIEWS, FINE_VIEWS, FINE_BANDS_VIEWS], ids=lambda v: v.name)
def test_word_tokenizer_spells_every_caption_word_as_one_token(tmp_path, views):
    tok = word_tokenizer(tmp_path, views=views)
    caps = [cap for s in toyworld.SHAPES for c in toyworld.COLOURS for cap in captions(s, c, views)]
    assert len(caps) == len(toyworld.ALL_OBJECTS) * (1 + len(views.labels))
    words = {w for cap in caps for w in cap.split()}
    assert all(len(tok(w).input_ids) == 3 for w in words | {"an"})   # start, word, end
    assert len(tok(max(caps, key=len)).input_ids) <= tok.model_max_length


@pytest.mark.parametrize("views", [REFERENCE_VIEWS, FINE_VIEWS, FINE_BANDS_VIEWS], ids=lambda v: v.name)
def test_view_index_matches_view_label(views):
    g = torch.Generator().manual_seed(0)
    az = torch.cat([torch.tensor([0.0, 22.4, 22.6, 44.0, 46.0, 90.0, 180.0, 230.0, 270.0, 316.0, 337.6, 10.0]),
                    360 * torch.rand(500, generator=g)])
    el = torch.cat([torch.tensor([0.0, 5.0, 5.0, 10.0, 20.0, 30.0, 40.0, -5.0, 0.0, 0.0, 0.0, 60.0]),
                    -6 + 96 * torch.rand(500, generator=g)])
    assert [views.labels[i] for i in views.index(az, el)] == [views.label(float(a), float(e)) for a, e in zip(az, el)]


def test_view_schemes_label_cameras_by_sector():
    assert view_label(0, 0) == view_label(44, 10) == view_label(316, 0) == REFERENCE_VIEWS.label(-44, 0) == "front"
    assert view_label(90, 0) == view_label(270, 0) == "side" and view_label(180, 60) == "overhead"
    assert [FINE_VIEWS.label(a, 0) for a in (0, 22, 23, 90, 135, 180, 270, 337, 338)] == [
        "front", "front", "front right", "right side", "back right", "back", "left side", "front left", "front"]
    assert [FINE_VIEWS.label(a, 43) for a in (44, 46, 180, 300)] == [
        "overhead front", "overhead right", "overhead back", "overhead left"]
    assert FINE_VIEWS.prefix("back") == "backside view of " and FINE_VIEWS.prefix("left side") == "left side view of "
    # Elevation words: low below 16°, mid to 32°, none to the overhead band at 42°, top above 66°.
    assert [FINE_BANDS_VIEWS.label(-45, e) for e in (-6, 15.9, 16, 31.9, 32, 42, 42.1, 66, 66.1, 90)] == [
        "low front left", "low front left", "mid front left", "mid front left", "front left", "front left",
        "overhead front", "overhead front", "top overhead front", "top overhead front"]
    assert FINE_BANDS_VIEWS.labels[:12] == FINE_VIEWS.labels and len(FINE_BANDS_VIEWS.labels) == 12 + 2 * 8 + 4
    # A toy prompt with any scheme's prefix still names its object.
    assert toyworld.parse_prompt("low back view of a red cube") == ("low back", toyworld.ToyObject("cube", "red"))
    assert toyworld.parse_prompt("front left view of a red cube") == ("front left", toyworld.ToyObject("cube", "red"))


def test_coverage_render_is_exact_for_every_colour():
    cams = orbit_cameras(torch.tensor([30.0, 200.0]), torch.tensor([10.0, 60.0]), torch.tensor([50.0, 55.0]))
    shaded, bg = toyworld.render_coverage("mug", cams, 16, 16)
    for colour in ("red", "cyan"):
        obj = toyworld.ToyObject("mug", colour)
        direct = toyworld.render_truth(obj, cams, 16, 16)
        assert torch.allclose(toyworld.colourise(shaded, bg, torch.tensor(obj.albedo)), direct, atol=1e-6)


def test_dataset_file_and_nearest_render_classifier(dataset):
    data = load_dataset(dataset)
    assert data["shaded"].shape == (7, 6, 1, 16, 16) and data["fov"].min() >= 45 and data["fov"].max() <= 60
    clf = NearestRender(data["shaded"], data["background"])
    albedo = torch.tensor(list(toyworld.COLOURS.values()))
    picks = [(s, v, c) for s in range(7) for v, c in ((1, s), (4, (s + 3) % 10))]
    imgs = torch.cat([toyworld.colourise(data["shaded"][s, v].float()[None], data["background"][s, v].float()[None],
                                         albedo[c]) for s, v, c in picks])
    s, c, err = clf.classify(imgs + 0.05 * torch.randn(imgs.shape, generator=torch.Generator().manual_seed(0)))
    assert s.tolist() == [p[0] for p in picks] and c.tolist() == [p[2] for p in picks]
    assert 0.04 < err.mean() < 0.06   # the added noise's RMS


def test_nearest_render_restricted_to_one_view(dataset):
    """With view labels, an image is only compared with the renders of the asked view."""
    data = load_dataset(dataset)
    labels = torch.tensor([0, 0, 0, 1, 1, 1]).expand(7, 6)            # views 0-2 are 'view 0', views 3-5 'view 1'
    clf = NearestRender(data["shaded"], data["background"], view_labels=labels)
    albedo = torch.tensor(list(toyworld.COLOURS.values()))
    img = toyworld.colourise(data["shaded"][3, 1].float()[None], data["background"][3, 1].float()[None], albedo[2])
    s, c, err = clf.classify(img, view=0)                             # its own view: found exactly
    assert (s.item(), c.item()) == (3, 2) and err.item() < 1e-3
    d = clf.distances(img, view=1).view(7, 6, -1)
    assert torch.isinf(d[:, :3]).all() and torch.isfinite(d[:, 3:]).all()
    assert clf.classify(img, view=1)[2].item() > 1e-2                # the exact render is out of the running
    with pytest.raises(ValueError, match="view_labels"):
        NearestRender(data["shaded"], data["background"]).classify(img, view=0)


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(SJCError, match="sjc prior dataset"):
        load_dataset(tmp_path)


def test_training_writes_a_loadable_diffusers_model_and_resumes_exactly(dataset, tmp_path):
    straight = train_prior(dataset, tmp_path / "a", TrainConfig(**TINY_TRAIN), TINY_MODEL, progress=False)
    assert train_prior(dataset, tmp_path / "b", TrainConfig(**TINY_TRAIN), TINY_MODEL, progress=False,
                       stop_after=3) is None
    st = torch.load(tmp_path / "b" / "state.pt", weights_only=False)
    del st["train"]["timestep_power"]   # a checkpoint written before the field existed resumes as uniform timesteps
    del st["model"]["norm_groups"]      # ... and with the GroupNorm groups of then (32; the default is 16 now)
    del st["train"]["precision"], st["train"]["weights_dtype"]   # ... in float32 (the defaults are bfloat16 / float16 now)
    torch.save(st, tmp_path / "b" / "state.pt")
    resumed = train_prior(dataset, tmp_path / "b", TrainConfig(**TINY_TRAIN), TINY_MODEL, progress=False)
    from safetensors.torch import load_file
    for sub in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(straight / sub), load_file(resumed / sub)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    index = json.loads((straight / "model_index.json").read_text())
    assert index["_class_name"] == "ToyWorldPipeline" and not (straight / "vae").exists()
    with open(tmp_path / "b" / "loss.csv") as f:
        log = list(csv.DictReader(f))
    # The resumed call continues the log from its checkpoint (step 3): every step once, in order.
    assert [int(r["step"]) for r in log] == [1, 2, 3, 4, 5, 6]
    assert all(float(r["loss"]) > 0 for r in log)
    assert sorted(p.name for p in (tmp_path / "a" / "samples").iterdir()) == ["step000003.png", "step000006.png"]
    with pytest.raises(SJCError, match="another configuration"):
        train_prior(dataset, tmp_path / "b", TrainConfig(**{**TINY_TRAIN, "lr": 1e-2}), TINY_MODEL, progress=False)

    # It loads through the same from_pretrained path as Stable Diffusion, as a pixel-space prior.
    from sjc.config import RunConfig
    from sjc.priors import load_prior, prior_name
    cfg = RunConfig(prompt="a red cube")
    cfg.model.model = str(straight)
    assert prior_name(cfg) == "toy"
    prior = load_prior(cfg)
    assert isinstance(prior, PixelTextPrior) and prior.shape == (3, 16, 16) and prior.pixel_space
    # v-prediction → D agrees with the scheduler's own x̂₀ (VE units: x = x_t·√(1+σ²)).
    from diffusers import DDPMScheduler
    sched = DDPMScheduler.from_pretrained(straight, subfolder="scheduler")
    t = 300
    x_t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    cond = prior.cond("a red cube")
    with torch.no_grad():
        v = prior.unet(x_t, torch.tensor([t, t]), encoder_hidden_states=cond[1:].expand(2, -1, -1)).sample
    x0 = sched.step(v, t, x_t).pred_original_sample
    sigma = prior.sigmas[t]
    assert torch.allclose(prior.D(x_t * (1 + sigma ** 2).sqrt(), sigma, cond, 1.0), x0, atol=1e-4)


def test_fine_tuning_into_finer_view_prompts_keeps_the_weights_and_records_the_scheme(dataset, tmp_path):
    """--init starts from a trained model (word embeddings moved to the new vocabulary); the folder records its views."""
    from dataclasses import replace

    from sjc.prior_training import build_model, init_from
    from sjc.priors.text_unet import load_text_unet_components
    quick = {**TINY_TRAIN, "steps": 2, "sample_every": 100}
    old = train_prior(dataset, tmp_path / "old", TrainConfig(**quick), replace(TINY_MODEL, views="reference"),
                      progress=False)
    assert PixelTextPrior(str(old)).views is REFERENCE_VIEWS
    unet, text, tok, _ = build_model(replace(TINY_MODEL, views="fine"), tmp_path / "tok")
    init_from(old, unet, text, tok)
    o_unet, _, o_text, o_tok, _ = load_text_unet_components(str(old))
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), o_unet.state_dict().values()))
    new_emb, old_emb = text.get_input_embeddings().weight, o_text.get_input_embeddings().weight
    assert new_emb.shape[0] > old_emb.shape[0]   # "left", "right", "back" are new words
    for word in ("red</w>", "cube</w>", "front</w>", "backside</w>", "overhead</w>"):
        assert torch.equal(new_emb[tok.get_vocab()[word]], old_emb[o_tok.get_vocab()[word]])
    assert "left</w>" in tok.get_vocab() and "left</w>" not in o_tok.get_vocab()

    fine = train_prior(dataset, tmp_path / "fine", TrainConfig(**{**quick, "init": str(old)}),
                       replace(TINY_MODEL, views="fine"), progress=False)
    assert json.loads((fine / "model_index.json").read_text())["_sjc_views"] == "fine"
    prior = PixelTextPrior(str(fine))
    assert prior.views is FINE_VIEWS
    assert prior.cond("front left view of a red cube").shape == prior.cond("a red cube").shape
    index = json.loads((fine / "model_index.json").read_text())
    (fine / "model_index.json").write_text(json.dumps({**index, "_sjc_views": "sideways"}))
    with pytest.raises(SJCError, match="unknown view scheme 'sideways'"):
        PixelTextPrior(str(fine))


def test_bfloat16_training_resumes_exactly_and_float16_weights_load_as_float32(dataset, tmp_path):
    """--precision bfloat16 autocasts the forward pass; --weights-dtype float16 stores half-size weights."""
    from dataclasses import replace

    from safetensors.torch import load_file
    quick = {**TINY_TRAIN, "sample_every": 100, "precision": "bfloat16"}
    model = replace(TINY_MODEL, norm_groups=16)
    half = train_prior(dataset, tmp_path / "h", TrainConfig(**{**quick, "weights_dtype": "float16"}), model, progress=False)
    assert train_prior(dataset, tmp_path / "r", TrainConfig(**quick), model, progress=False, stop_after=3) is None
    full = train_prior(dataset, tmp_path / "r", TrainConfig(**quick), model, progress=False)
    unet_file = "unet/diffusion_pytorch_model.safetensors"
    h, f = load_file(half / unet_file), load_file(full / unet_file)
    assert h.keys() == f.keys()
    assert {t.dtype for t in h.values()} == {torch.float16} and {t.dtype for t in f.values()} == {torch.float32}
    assert all(torch.equal(h[k], f[k].half()) for k in f)   # same training, resumed or not; only the storage differs
    assert (half / unet_file).stat().st_size < 0.6 * (full / unet_file).stat().st_size
    assert json.loads((half / "unet" / "config.json").read_text())["norm_num_groups"] == 16
    with open(tmp_path / "r" / "loss.csv") as fh:
        assert all(0 < float(r["loss"]) < 10 for r in csv.DictReader(fh))
    prior = PixelTextPrior(str(half))
    assert prior.unet.dtype == torch.float32
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = PixelTextPrior(str(full))
    cond = prior.cond("a red cube")
    with torch.no_grad():
        d_half, d_full = prior.D(x * 2, torch.tensor(1.0), cond, 2.0), ref.D(x * 2, torch.tensor(1.0), cond, 2.0)
    assert 0 < float((d_half - d_full).abs().max()) < 1e-2   # float16 rounding of the weights, nothing more


def test_bfloat16_on_a_cpu_without_it_warns_once_and_names_the_fast_choice(dataset, tmp_path, capsys, monkeypatch):
    """Emulated bfloat16 trains over 10× slower than float32: the run says so in one line; float32 or native is silent."""
    from sjc import prior_training
    one_step = dict(progress=False, stop_after=1)
    monkeypatch.setattr(prior_training, "native_bfloat16", lambda: False)
    train_prior(dataset, tmp_path / "b", TrainConfig(**{**TINY_TRAIN, "precision": "bfloat16"}), TINY_MODEL, **one_step)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no native bfloat16" in err[0] and "--precision float32" in err[0], err
    train_prior(dataset, tmp_path / "f", TrainConfig(**TINY_TRAIN), TINY_MODEL, **one_step)
    monkeypatch.setattr(prior_training, "native_bfloat16", lambda: True)
    train_prior(dataset, tmp_path / "b", TrainConfig(**{**TINY_TRAIN, "precision": "bfloat16"}), TINY_MODEL, **one_step)
    assert "bfloat16" not in capsys.readouterr().err


def test_timestep_power_draws_more_small_timesteps_and_is_uniform_at_one():
    a = sample_timesteps(8, 1000, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, torch.randint(1000, (8,), generator=torch.Generator().manual_seed(3)))   # old runs reproduce
    t = sample_timesteps(200_000, 1000, 2.0, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) <= 999
    assert abs(float((t < 144).float().mean()) - 0.144 ** 0.5) < 0.005   # P(⌊T·u²⌋ < k) = √(k/T)
    assert abs(float(t.float().mean()) - 1000 / 3) < 3


def test_prior_cli_errors(dataset, tmp_path, capsys):
    assert main(["prior", "train", "--data", str(dataset), "--out", str(tmp_path / "t"), "--timestep-power", "0"]) == 2
    assert "--timestep-power must be a positive number" in capsys.readouterr().err
    assert main(["prior", "train", "--data", str(dataset), "--out", str(tmp_path / "t"), "--precision", "float16"]) == 2
    assert "unknown --precision 'float16'; choose one of float32, bfloat16" in capsys.readouterr().err
    assert main(["prior", "train", "--data", str(dataset), "--out", str(tmp_path / "t"), "--norm-groups", "20"]) == 2
    assert "multiple of --norm-groups 20, got 48 96 192" in capsys.readouterr().err
    assert main(["prior", "train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "t2")]) == 2
    assert "sjc prior dataset" in capsys.readouterr().err and not (tmp_path / "t2").exists()
    assert main(["prior", "dataset", "--views", "0", "--out", str(tmp_path)]) == 2
    assert "--views" in capsys.readouterr().err
    assert main(["prior", "train", "--data", str(tmp_path), "--out", str(tmp_path / "t"), "--init", str(tmp_path)]) == 2
    assert "no unet/" in capsys.readouterr().err
    assert main(["prior", "check", "--data", str(dataset), "--view", "side", "--out", str(tmp_path / "c")]) == 2
    assert "not a view of this prior's 'fine-bands' scheme" in capsys.readouterr().err


def test_prior_train_refuses_a_folder_another_training_holds(dataset, tmp_path, capsys):
    from filelock import FileLock

    out = tmp_path / "t"
    out.mkdir()
    with FileLock(out / ".sjc-lock"):   # what a running `sjc prior train --out t` holds
        assert main(["prior", "train", "--data", str(dataset), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sjc: error: ") and err.count("\n") == 1 and "in use by another sjc prior train" in err
    assert not (out / "state.pt").exists() and not (out / "loss.csv").exists() and not (out / "config.json").exists()


@pytest.mark.parametrize("flag,value", [("--warmup", "-1"), ("--log-every", "0"), ("--checkpoint-every", "0"),
                                        ("--sample-every", "0"), ("--threads", "-1"), ("--ema-decay", "1"),
                                        ("--cond-dropout", "1.5"), ("--view-caption", "-0.1")])
def test_prior_train_rejects_bad_settings_before_building_anything(dataset, tmp_path, capsys, flag, value):
    assert main(["prior", "train", "--data", str(dataset), "--out", str(tmp_path / "t"), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sjc: error: ") and err.count("\n") == 1 and flag in err and value in err
    assert not (tmp_path / "t" / "state.pt").exists() and not (tmp_path / "t" / "loss.csv").exists()


def test_prior_train_without_warmup_starts_at_the_full_learning_rate(dataset, tmp_path):
    cfg = TrainConfig(**{**TINY_TRAIN, "steps": 2, "warmup": 0})
    assert train_prior(dataset, tmp_path / "w", cfg, TINY_MODEL, progress=False) is not None
    with open(tmp_path / "w" / "loss.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    # No warm-up: the cosine alone, lr·½(1 + cos(π·i/steps)) after step i (the log rounds to 3 digits).
    assert lrs == [float(f"{cfg.lr * 0.5 * (1 + math.cos(math.pi * i / 2)):.3g}") for i in (1, 2)]


def test_missing_dataset_folder_hint_names_that_folder(tmp_path):
    with pytest.raises(SJCError, match=f"--out {tmp_path / 'toyprior'}`"):
        load_dataset(tmp_path / "toyprior")


# ------------------------------------------------------------------------------------ the shipped weights


@pytest.fixture(scope="module")
def builtin():
    return PixelTextPrior()


@pytest.fixture(scope="module")
def reference_data(tmp_path_factory):
    """500 random views per shape at 32×32 (other cameras than training's) as a dataset folder.

    500 as in `sjc prior check`: with fewer views the nearest render of a sharp cube in an arbitrary pose is far
    away, and the distance stops telling a sharp right image from a blurred one.
    """
    return build_dataset(DatasetConfig(views=500, resolution=32, seed=1), tmp_path_factory.mktemp("ref"), progress=False)


@pytest.fixture(scope="module")
def reference(reference_data):
    """A nearest-render classifier over the reference views."""
    data = load_dataset(reference_data)
    return NearestRender(data["shaded"], data["background"])


def test_builtin_prior_is_the_default_and_small(builtin):
    from sjc.config import RunConfig
    from sjc.priors import prior_name
    assert prior_name(RunConfig(prompt="a red cube")) == "toy"
    assert builtin.views is FINE_BANDS_VIEWS   # trained on 45° sectors with height words; SJC asks it with those
    size = sum(p.stat().st_size for p in BUILTIN_TOY_MODEL.rglob("*") if p.is_file())
    assert size <= 25 * 2 ** 20


def test_prior_train_defaults_are_the_shipped_models_recipe():
    """`sjc prior train` with no flags trains what was shipped (docs/toy-prior/train-config.json)."""
    from dataclasses import asdict
    from pathlib import Path
    recipe = json.loads((Path(__file__).parents[1] / "docs/toy-prior/train-config.json").read_text())
    assert {**recipe["train"], "threads": 0} == asdict(TrainConfig())   # threads: the machine's, not the recipe's
    assert {**recipe["model"], "channels": tuple(recipe["model"]["channels"])} == asdict(UNetConfig())
    index = json.loads((BUILTIN_TOY_MODEL / "model_index.json").read_text())
    assert index["_sjc_views"] == UNetConfig().views == "fine-bands"
    unet = json.loads((BUILTIN_TOY_MODEL / "unet/config.json").read_text())
    assert tuple(unet["block_out_channels"]) == UNetConfig().channels and unet["norm_num_groups"] == UNetConfig().norm_groups


def test_builtin_prior_guides_sjc_and_samples_at_its_own_scales(builtin):
    """SJC's default guidance (2) and polish (guidance 1.5) are the measured ones; 2D sampling keeps its own scale (3)."""
    from sjc.config import RunConfig, fill_from
    from sjc.guidance import ScoreGuide
    assert builtin.merged_defaults()["guidance_scale"] == 2.0 and builtin.sampling_guidance_scale == 3.0
    cfg = fill_from(RunConfig(prompt="a red cube"), builtin.config_defaults())
    assert ScoreGuide(builtin, "paas", builtin.sigmas, cfg.guidance.guidance_scale, 1).guidance == 2.0
    assert cfg.guidance.guidance_scale == 2.0 and cfg.optim.polish_steps == 600 and cfg.optim.steps == 2000
    assert cfg.guidance.polish_guidance_scale == 1.5   # experiments/toy-prior-log.md, "The appearance polish"
    assert cfg.reg.emptiness_weight == 10.0   # experiments/toy-prior-log.md, "Emptiness weight: 10"
    x = torch.zeros(1, *builtin.shape)
    sigma, cond = torch.tensor(2.0), builtin.cond("a red cube")
    assert torch.equal(builtin.D(x, sigma, cond), builtin.D(x, sigma, cond, 3.0))   # D without a scale: sampling's
    assert not torch.allclose(builtin.D(x, sigma, cond), builtin.D(x, sigma, cond, 2.0))


def test_builtin_prior_polish_guides_at_its_own_scale(builtin):
    """The toy prior's polish guides at 1.5 (SJC at 2): another scale moves the polished appearance, never the geometry."""
    from sjc.config import RunConfig
    from sjc.build import build_run
    from sjc.train import train

    def run(polish_scale):
        cfg = RunConfig(prompt="a red cube")
        cfg.field.grid_size, cfg.optim.steps, cfg.optim.polish_steps = 12, 6, 4
        cfg.guidance.polish_guidance_scale = polish_scale
        return train(build_run(cfg, builtin), progress=False)

    default, other = run(None), run(3.0)
    assert default.cfg.guidance.polish_guidance_scale == 1.5 and default.polish_guide.guidance == 1.5
    assert default.guide.guidance == other.guide.guidance == 2.0 and other.polish_guide.guidance == 3.0
    a, b = default.field.state_dict(), other.field.state_dict()
    for name in ("density_raw", "d_scale", "background_raw"):
        assert torch.equal(a[name], b[name]), name
    assert (a["appearance_raw"] - b["appearance_raw"]).abs().max() > 1e-4


def test_builtin_prior_takes_one_prompt_per_image(builtin):
    """A (2B, L, D) conditioning, B empty then B prompts, denoises each image as its own prompt would."""
    prompts = ["front view of a red cube", "a blue sphere"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor(0.3)
    cond = torch.cat([builtin.embed("").expand(2, -1, -1)] + [builtin.embed(p) for p in prompts])
    for g in (2.0, 1.0):
        alone = torch.cat([builtin.D(x[i:i + 1], sigma, builtin.cond(p), g) for i, p in enumerate(prompts)])
        assert torch.allclose(builtin.D(x, sigma, cond, g), alone, atol=1e-5)


def test_builtin_prior_runs_channels_last_on_the_cpu_and_denoises_as_the_default_layout(builtin):
    """On the CPU the U-Net runs channels-last (faster convolutions); D(x, σ) is the NCHW one to float rounding."""
    from sjc.config import RunConfig
    from sjc.priors import load_prior
    assert builtin.channels_last
    w = builtin.unet.conv_in.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    cfg = RunConfig(prompt="a red cube")
    cfg.model.channels_last = False   # --no-channels-last
    plain = load_prior(cfg)
    assert not plain.channels_last and plain.unet.conv_in.weight.is_contiguous()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cond = builtin.cond("front view of a red cube")
    for sigma in (0.3, 5.0):
        for g in (1.0, 2.0):
            d = builtin.D(x * sigma, torch.tensor(sigma), cond, g)
            assert d.is_contiguous()   # the rest of the method sees the default layout
            assert torch.allclose(d, plain.D(x * sigma, torch.tensor(sigma), cond, g), rtol=0, atol=1e-5)


def test_bench_unet_compares_the_two_layouts_in_one_process(tmp_path):
    out = tmp_path / "unet.json"
    main(["bench", "unet", "--steps", "2", "--repeats", "1", "--out", str(out)])
    res = json.loads(out.read_text())["unet"]
    assert res["calls"] == res["steps"] == 2 and res["repeats"] == 1
    assert 0 <= res["max_abs_difference"] < 1e-4   # the same denoiser, rounded differently
    for layout in ("contiguous", "channels_last"):
        assert res[layout]["seconds_per_call"] > 0 and res[layout]["seconds_per_step"] > 0
    assert res["step_speedup"] == pytest.approx(res["contiguous"]["seconds_per_step"]
                                                / res["channels_last"]["seconds_per_step"])


def test_builtin_prior_rejects_words_it_never_saw(builtin):
    with pytest.raises(SJCError, match="not a toy-world prompt"):
        builtin.cond("a photo of a cat")


def test_builtin_prior_samples_the_prompted_object(builtin, reference):
    """2D Heun samples of trained and held-out objects are labelled right by the nearest true render."""
    from sjc.check2d import sample_accuracy
    clf = reference
    objs = [toyworld.ToyObject("sphere", "blue"), toyworld.ToyObject("cube", "red"),
            toyworld.ToyObject("cube", "green")]   # the last is held out of training
    rows, _ = sample_accuracy(builtin, clf, objs, n=4, steps=15)
    assert sum(r["correct"] for r in rows) / len(rows) >= 0.75, rows


def test_view_prompted_samples_are_checked_against_their_view(builtin, reference_data):
    """`sjc prior check --view`: one row per object and view, each sample compared with that view's renders."""
    from sjc.check2d import sample_accuracy
    data = load_dataset(reference_data)
    clf = NearestRender(data["shaded"], data["background"],
                        view_labels=builtin.views.index(data["azimuth"], data["elevation"]))
    rows, imgs = sample_accuracy(builtin, clf, [toyworld.ToyObject("cube", "red")], n=2, steps=15,
                                 views=("front", "overhead back"))
    assert [r["view"] for r in rows] == ["front", "overhead back"] and imgs.shape == (4, 3, 32, 32)
    assert sum(r["correct"] for r in rows) / len(rows) >= 0.5, rows


def test_paas_beats_naive_in_2d(builtin, reference):
    """The paper's 2D experiment: from a flat grey start PAAS reaches a toy-world image, the naive score does not."""
    clf = reference
    # 300 steps as in docs/toy-prior.md (at 150 the two are still level with the shipped prior).
    errs = {m: clf.classify(optimise_image(builtin, "a red cube", m, steps=300))[2].item() for m in ("paas", "naive")}
    assert errs["paas"] < errs["naive"], errs



def test_paas2d_labelling_checks_every_prompt_before_optimising(dataset, tmp_path, capsys, monkeypatch):
    import sjc.check2d as check2d

    monkeypatch.setattr(check2d, "optimise_image", lambda *a, **k: pytest.fail("optimised before checking prompts"))
    assert main(["paas2d", "a red cube", "a photo of a cat", "--data", str(dataset), "--steps", "1",
                 "--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sjc: error: ") and "a photo of a cat" in err and err.count("\n") == 1
    assert not (tmp_path / "p.png").exists()


def test_a_resumed_training_logs_the_same_losses_and_refuses_another_dataset(dataset, tmp_path):
    cfg = TrainConfig(**{**TINY_TRAIN, "log_every": 2, "checkpoint_every": 5})
    train_prior(dataset, tmp_path / "a", cfg, TINY_MODEL, progress=False)
    assert train_prior(dataset, tmp_path / "b", cfg, TINY_MODEL, progress=False, stop_after=3) is None   # mid-log
    train_prior(dataset, tmp_path / "b", cfg, TINY_MODEL, progress=False)

    def logged(folder):
        with open(folder / "loss.csv") as f:
            return [(r["step"], r["loss"], r["lr"]) for r in csv.DictReader(f)]

    # The step-4 row averages steps 3 and 4 in both, though the resumed run stopped after step 3.
    assert logged(tmp_path / "a") == logged(tmp_path / "b") and [s for s, _, _ in logged(tmp_path / "a")] == ["2", "4", "6"]
    other = tmp_path / "other-data"
    build_dataset(DatasetConfig(views=7, resolution=16), other, progress=False)
    assert train_prior(dataset, tmp_path / "c", cfg, TINY_MODEL, progress=False, stop_after=2) is None
    with pytest.raises(SJCError, match="holds a training run on another dataset .*'views': 6"):
        train_prior(other, tmp_path / "c", cfg, TINY_MODEL, progress=False)


def test_a_resume_may_change_only_how_the_model_is_saved(dataset, tmp_path):
    cfg = TrainConfig(**{**TINY_TRAIN, "steps": 4})
    assert train_prior(dataset, tmp_path / "t", cfg, TINY_MODEL, progress=False, stop_after=2) is None
    folder = train_prior(dataset, tmp_path / "t", replace(cfg, weights_dtype="float16"), TINY_MODEL, progress=False)
    from safetensors.torch import load_file
    assert all(v.dtype == torch.float16 for v in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").values())
    with pytest.raises(SJCError, match="another configuration"):
        train_prior(dataset, tmp_path / "t", replace(cfg, lr=1e-2), TINY_MODEL, progress=False)


def test_2d_commands_check_their_outputs_and_dataset_before_any_sampling(dataset, tmp_path, capsys, monkeypatch):
    import sjc.check2d as check2d

    for name in ("optimise_image", "sample_accuracy"):
        monkeypatch.setattr(check2d, name, lambda *a, **k: pytest.fail("sampled before checking its input"))
    # The rows of paas2d go beside its PNG as .json: a .json --out would have overwritten the image.
    assert main(["paas2d", "a red cube", "--steps", "1", "--out", str(tmp_path / "r.json")]) == 2
    assert "--out must name a .png file" in capsys.readouterr().err
    # The 16×16 dataset cannot label the built-in prior's 32×32 images.
    for argv in (["paas2d", "a red cube", "--out", str(tmp_path / "p.png")], ["prior", "check", "--out", str(tmp_path / "c")]):
        assert main([*argv, "--data", str(dataset), "--steps", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "16×16 renders but the prior makes 32×32" in err and "--resolution 32" in err


@pytest.mark.parametrize("argv,hint", [
    (["prior", "dataset", "--radius", "0"], "--radius > 0"),
    (["prior", "dataset", "--fov-min", "70", "--fov-max", "10"], "--fov-min <= --fov-max"),
    (["prior", "dataset", "--elev-min", "-100"], "--elev-min"),
    (["prior", "train", "--stop-after", "-2"], "--stop-after"),
    (["prior", "check", "--views", "-3"], "--views"),
])
def test_prior_commands_refuse_settings_that_would_silently_misbehave(dataset, tmp_path, capsys, argv, hint):
    extra = [] if argv[1] == "dataset" else ["--data", str(dataset)]
    assert main([*argv, *extra, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sjc: error: ") and err.count("\n") == 1 and hint in err


def test_prior_check_out_is_a_prefix(tmp_path, monkeypatch, capsys):
    """`--out pc/guidance-7.5` writes guidance-7.5.json and .md (Path.with_suffix once made them guidance-7.*)."""
    import sjc.check2d as check2d
    import sjc.cli as cli

    data = tmp_path / "d32"
    build_dataset(DatasetConfig(views=2, resolution=32), data, progress=False)
    monkeypatch.setattr(check2d, "sample_accuracy", lambda prior, clf, objs, *a, **k: (
        [{"object": o.caption, "view": None, "correct": 1.0, "shape_ok": 1.0, "colour_ok": 1.0} for o in objs],
        torch.zeros(len(objs), 3, 32, 32)))
    assert cli.main(["prior", "check", "--data", str(data), "--out", str(tmp_path / "pc" / "guidance-7.5")]) == 0
    names = sorted(p.name for p in (tmp_path / "pc").iterdir())
    assert names == ["guidance-7.5-held-out.png", "guidance-7.5-trained.png", "guidance-7.5.json", "guidance-7.5.md"]
    capsys.readouterr()
    assert cli.main(["prior", "check", "--data", str(data), "--view", "all", "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err   # two renders per shape: most of the 32 view prompts have none to be judged by
    assert err.startswith("sjc: error: --view ") and "the dataset's first 2 views of some shapes include none" in err


def test_training_sample_grid_prompts_are_training_captions():
    from sjc.cameras import VIEW_SCHEMES
    from sjc.prior_training import SAMPLES, captions

    assert [(s, c) in HELD_OUT for s, c, _ in SAMPLES] == [False] * 4 + [True] * 4
    for views in VIEW_SCHEMES.values():
        for shape, colour, view in SAMPLES:
            prompt = (views.prefix(view) if view else "") + toyworld.ToyObject(shape, colour).caption
            assert prompt in captions(shape, colour, views), (views.name, prompt)


def test_prior_train_cli_sets_the_text_encoder_and_prediction_type(dataset, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["prior", "train", "--data", str(dataset), "--out", str(out), "--steps", "2", "--batch", "2",
                 "--channels", "32", "64", "--norm-groups", "32", "--text-width", "32", "--text-layers", "1",
                 "--prediction-type", "epsilon", "--precision", "float32", "--weights-dtype", "float32",
                 "--sample-every", "100", "--quiet"]) == 0
    model = out / "model"
    text = json.loads((model / "text_encoder" / "config.json").read_text())
    sched = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    assert text["hidden_size"] == 32 and text["num_hidden_layers"] == 1 and sched["prediction_type"] == "epsilon"
    from sjc.priors.text_unet import PixelTextPrior
    prior = PixelTextPrior(str(model))
    assert prior.prediction_type == "epsilon"
    x = torch.zeros(1, *prior.shape)
    assert torch.isfinite(prior.D(x, 1.0, prior.cond("a red cube"))).all()
    assert main(["prior", "train", "--data", str(dataset), "--out", str(tmp_path / "u"), "--text-width", "30"]) == 2
    assert "--text-width a positive multiple of 4" in capsys.readouterr().err


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_dsm_loss_targets_the_models_prediction_type(prediction_type):
    """A network that predicts the right target exactly has loss 0; the other target does not."""
    from types import SimpleNamespace

    from diffusers import DDPMScheduler
    from sjc.prior_training import dsm_loss, sample_timesteps

    sched = DDPMScheduler(prediction_type=prediction_type)
    x0 = torch.rand(3, 3, 4, 4) * 2 - 1
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    t = sample_timesteps(3, sched.config.num_train_timesteps, 1.0, g)   # dsm_loss's own draws, replayed
    noise = torch.randn(x0.shape, generator=g)
    targets = {"v_prediction": sched.get_velocity(x0, noise, t), "epsilon": noise}

    def oracle(want):
        return lambda x_t, t, encoder_hidden_states: SimpleNamespace(sample=want)

    text = lambda ids: (torch.zeros(ids.shape[0], 1, 4),)   # noqa: E731
    for kind, target in targets.items():
        g.set_state(state)
        loss = dsm_loss(oracle(target), text, sched, x0, torch.zeros(3, 2, dtype=torch.long), g).item()
        assert (loss == 0) == (kind == prediction_type), (kind, loss)

#!/usr/bin/env bash
# Reproduces the numbers in docs/toy-prior.md, docs/eval*.md and docs/performance.md on a 2-core CPU.
# Run from the repository root with the package installed (.venv/bin on PATH). Each block is independent.
# A run on the built-in prior used the model shipped on its day: the blocks measured before 2026-12-05 used the
# fine-bands model of 2026-12-04 (`train-bands` below; or `git archive 6f12cce sjc/weights/toy32`), pass it with --model.
set -euo pipefail
export SJC_CACHE="${SJC_CACHE:-$HOME/.cache/sjc}"
SWEEP_PROMPTS=("a red cube" "a blue mug" "a green cube" "a pink cube with a ball on its front")
P2=(--polish-guidance-scale 2)   # the toy prior's polish guidance before 1.5 (2026-12-04): every run with a polish measured before that keeps it
E1=(--emptiness-weight 1 "${P2[@]}")   # the toy prior's emptiness weight before 10 (2026-12-03): every run measured before that keeps it
OLD=(--guidance-scale 3 --polish-steps 0 --steps 1000 "${E1[@]}")   # the toy prior's defaults before guidance 2, the polish and 2,000 steps

case "${1:-all}" in
train | all)
  sjc prior dataset --out toyprior                                   # 7 shapes × 2000 views, ~3 min
  # The shipped model (since 2026-12-05): the defaults, blocks 48/96/192 in bfloat16, ~109 min on 2 cores (docs/toy-prior/train-config.json).
  sjc prior train --data toyprior --out toyprior/train-wide --threads 2
  rm -rf sjc/weights/toy32 && cp -r toyprior/train-wide/model sjc/weights/toy32
  sjc prior check --data toyprior --out docs/toy-prior/check ;;&
train-bands)   # the model shipped 2026-12-04: fine-bands captions, blocks 32/64/128 in float32, ~100 min (experiments/toy-prior/bands/train-config.json)
  sjc prior train --data toyprior --out toyprior/train-bands --channels 32 64 128 --norm-groups 32 --precision float32 \
    --weights-dtype float32 --threads 2
  sjc prior check --data toyprior --model toyprior/train-bands/model --out experiments/toy-prior/bands/check ;;
fine-model)   # the model shipped before it: the same run with the fine view prompts (experiments/toy-prior/fine-model/train-config.json)
  sjc prior train --data toyprior --out toyprior/train --views fine --steps 7000 --view-caption 0.8 --threads 2 ;;
finetuned)   # the model shipped before: base model (reference views) + two fine-tunes, ~135 min (experiments/toy-prior/finetuned/)
  sjc prior train --data toyprior --out toyprior/base --steps 6000 --views reference  # batch 64, resumable; ~85 min
  sjc prior train --data toyprior --out toyprior/fine-1 --init toyprior/base/model --views fine --steps 1500 \
    --lr 2e-4 --warmup 100 --ema-decay 0.998 --sample-every 500
  sjc prior train --data toyprior --out toyprior/fine-2 --init toyprior/fine-1/model --views fine --steps 2000 \
    --lr 3e-4 --warmup 50 --view-caption 0.9 --ema-decay 0.998 --sample-every 1000 ;;
views | all)   # why fine view prompts: the exact prior with either scheme; 4 prompts x 3 seeds, ~3 min each
  V=experiments/toy-prior/views
  sjc eval --prior closed-form --prompts "${SWEEP_PROMPTS[@]}" --seeds 3 --variants paas --jobs 2 --out $V/closed-form-reference
  sjc eval --prior closed-form --view-scheme fine --prompts "${SWEEP_PROMPTS[@]}" --seeds 3 --variants paas --jobs 2 \
    --out $V/closed-form-fine
  sjc eval --model toyprior/fine-1/model --prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 "${OLD[@]}" \
    --out $V/learned-fine-1 ;;&
check | all)
  sjc prior check --data toyprior --out experiments/toy-prior/fine-model/check         # 2D sample accuracy, ~4 min
  for g in 2 5; do sjc prior check --data toyprior --guidance-scale $g --out experiments/toy-prior/check-guidance/guidance-$g; done
  for g in 2 3; do sjc prior check --data toyprior --guidance-scale $g --seed 100 --out experiments/toy-prior/check-guidance/guidance-$g-seed-100; done
  for s in 200 300; do sjc prior check --data toyprior --seed $s --out experiments/toy-prior/check-guidance/guidance-3-seed-$s; done
  sjc prior check --data toyprior --view all --n 2 --out experiments/toy-prior/fine-model/check-views   # with view prompts, ~16 min
  python experiments/scripts/ball_visibility.py toyprior                     # share of views that hide the ball
  sjc paas2d "a red cube" "a blue sphere" "a green cube" "an orange mug" --data toyprior \
    --methods paas naive sds --out experiments/toy-prior/fine-model/paas2d.png ;;&
defaults | all)   # the SJC defaults of the toy prior: one seed, 4 prompts (2 held out), ~1.5 min per cell
  # (measured before guidance 2 and the polish became the defaults: "${OLD[@]}" keeps those settings)
  S=experiments/toy-prior/sweep
  for r in "0.1 4" "0.3 4" "0.5 8" "0.1 10" "0.3 10" "1 10" "0.5 20"; do
    set -- $r
    sjc eval --prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 "${OLD[@]}" --sigma-min $1 --sigma-max $2 --out $S/sigma-$1-$2
  done
  for r in "0.1 4" "0.5 8"; do set -- $r   # the old default and the closest rival, with 3 seeds
    sjc eval --prompts "${SWEEP_PROMPTS[@]}" --seeds 3 --variants paas --jobs 2 "${OLD[@]}" --sigma-min $1 --sigma-max $2 --out $S/sigma-$1-$2-3seeds
  done
  sjc eval --prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 "${OLD[@]}" --sigma-min 0.5 --sigma-max 10 --guidance-scale 5 \
    --out $S/sigma-0.5-10-guidance-5
  for e in 10 0.1; do
    sjc eval --prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 "${OLD[@]}" --sigma-min 0.1 --sigma-max 4 --emptiness-weight $e \
      --out $S/emptiness-$e
  done
  # the same checks with the shipped model: seed 0, then the two closest rivals with 3 seeds
  S=experiments/toy-prior/sweep/shipped; E=(--prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 --polish-steps 0 --steps 1000 "${E1[@]}")
  sjc eval "${E[@]}" --guidance-scale 2 --out $S/guidance-2
  sjc eval "${E[@]}" --guidance-scale 5 --out $S/guidance-5
  sjc eval "${E[@]}" --guidance-scale 3 --sigma-min 0.5 --sigma-max 8 --out $S/sigma-0.5-8
  sjc eval "${E[@]}" --guidance-scale 3 --emptiness-weight 3 --out $S/emptiness-3
  sjc eval "${E[@]}" --seeds 3 --guidance-scale 2 --out $S/guidance-2-3seeds
  sjc eval "${E[@]}" --seeds 3 --guidance-scale 3 --sigma-min 0.5 --sigma-max 8 --out $S/sigma-0.5-8-3seeds
  sjc eval --seeds 3 --jobs 2 --variants paas --guidance-scale 2 --polish-steps 0 --steps 1000 "${E1[@]}" --out $S/eval-12-guidance-2 ;;&  # 12 prompts
eval | all)   # the main table: 12 prompts (6 held out) × 3 seeds; the oracle ceiling (1 seed)
  sjc eval --seeds 3 --jobs 2 --variants paas --out docs/eval
  sjc eval --jobs 2 --variants oracle --out docs/eval-oracle
  M=experiments/toy-prior/emptiness   # the same two at the emptiness weight before (1): 3 seeds, and the oracle
  sjc eval --seeds 3 --jobs 2 --variants paas "${E1[@]}" --out $M/eval-emptiness-1
  sjc eval --jobs 2 --variants oracle "${E1[@]}" --out $M/eval-oracle-emptiness-1
  sjc eval --jobs 2 --variants paas --emptiness-weight 30 "${P2[@]}" --out $M/eval-emptiness-30   # seed 0, ~21 min
  T=experiments/toy-prior/steps   # the SJC step count: 1,000 (the default before 2,000) with 3 seeds, the others seed 0
  sjc eval --seeds 3 --jobs 2 --variants paas --steps 1000 "${E1[@]}" --out $T/eval-1000
  sjc eval --jobs 2 --variants oracle --steps 1000 "${E1[@]}" --out $T/eval-oracle-1000
  for n in 500 2000 3000; do sjc eval --jobs 2 --variants paas --steps $n "${E1[@]}" --out $T/steps-$n; done
  sjc eval --seeds 3 --jobs 2 --variants sds "${E1[@]}" --out $T/eval-sds-2000   # SDS at the default 2,000 steps, ~24 min
  sjc eval --jobs 2 --variants paas --grid-size 64 "${E1[@]}" --out experiments/toy-prior/grid/eval-grid-64   # a 64³ grid, seed 0, ~13 min
  sjc eval --prompts "a orange mug" --seeds 3 --variants paas "${E1[@]}" --out experiments/toy-prior/sweep/shipped/orange-mug-training-spelling
  P=experiments/toy-prior/previous-defaults   # 1,000 steps, guidance 3, no polish
  sjc eval --seeds 3 --jobs 2 --variants paas "${OLD[@]}" --out $P/eval
  sjc eval --jobs 2 --variants oracle --polish-steps 0 --steps 1000 "${E1[@]}" --out $P/eval-oracle
  sjc eval --prompts "${SWEEP_PROMPTS[@]}" --seeds 3 --jobs 2 "${OLD[@]}" \
    --variants paas-plain naive sds paas:noview --out $P/eval-methods
  sjc eval --seeds 3 --jobs 2 "${OLD[@]}" --variants paas-plain naive sds paas:noview sds:noview --out $P/eval-methods-12 ;;&
cone | all)   # where the cone's IoU goes (experiments/toy-prior-log.md, "Where the rest of the gap is"): one run, seed 0, ~80 s each
  sjc generate "a green cone" "${E1[@]}" --out-dir outputs/cone --no-video --no-mesh --overwrite --quiet
  sjc generate "a green cone" --sigma-min 0.1 "${E1[@]}" --out-dir outputs/cone-sigma-0.1 --no-video --no-mesh --overwrite --quiet
  for d in outputs/cone outputs/cone-sigma-0.1; do python experiments/scripts/occupancy_profile.py $d; done ;;&
polish | all)   # the appearance polish swept (at 1,000 SJC steps): 11 settings from one checkpoint per run, 12 prompts x 3 seeds, ~65 min
  python experiments/scripts/polish_sweep.py --out experiments/toy-prior/psnr/polish-sweep --seeds 3 --jobs 2 --steps 1000 --emptiness-weight 1 ;;&
methods | all)   # gradient forms and view prompts, 3 seeds, at the defaults but emptiness weight 1 (PAAS: emptiness/eval-emptiness-1, SDS: steps/eval-sds-2000)
  sjc eval --seeds 3 --jobs 2 --variants paas-plain naive paas:noview sds:noview "${E1[@]}" --out toyprior/methods-2000   # ~2 h
  python experiments/scripts/merge_evals.py experiments/toy-prior/emptiness/eval-methods-12 \
    --variants paas sds paas-plain naive paas:noview sds:noview \
    --files experiments/toy-prior/emptiness/eval-emptiness-1.json experiments/toy-prior/steps/eval-sds-2000.json toyprior/methods-2000.json   # the six in one table
  # the same at 1,000 steps (PAAS itself: experiments/toy-prior/steps/eval-1000), ~1.6 h
  sjc eval --seeds 3 --jobs 2 --variants paas-plain naive sds paas:noview sds:noview --steps 1000 "${E1[@]}" \
    --out experiments/toy-prior/steps/eval-methods-12-1000 ;;&
edges | all)   # where the PSNR gap is at the defaults: the edge band, seed 0, six trained prompts, PAAS and the oracle, ~2-3 min a run
  for p in "a blue sphere" "a red cube" "a green cone" "a yellow cylinder" "a red cube with a ball on its front" "a blue mug"; do
    for v in oracle paas; do python experiments/scripts/psnr_breakdown.py "$p" $v; done
  done > experiments/toy-prior/psnr/edge-band.jsonl ;;&
from-oracle | all)   # how much of the gap is the prior's fixed point and how much the path: PAAS from the oracle's field, seed 0, ~3.5 min a prompt
  python -c "from sjc.evaluate import DEFAULT_EVAL_PROMPTS; print(*DEFAULT_EVAL_PROMPTS, sep='\n')" |
    xargs -P 2 -I{} python experiments/scripts/from_oracle.py "{}" > experiments/toy-prior/from-oracle/from-oracle.jsonl ;;&   # finishing order (the committed file: the main table's order)
sds | all)   # SDS at today's defaults (emptiness weight 10), 12 prompts x 3 seeds, ~30 min
  sjc eval --seeds 3 --jobs 2 --variants sds "${P2[@]}" --out experiments/toy-prior/emptiness/eval-sds-emptiness-10 ;;&
small-sigma | all)   # a fine-tune towards small σ (not shipped), its 2D drift and two 3D runs, ~20 min
  sjc prior train --data toyprior --out toyprior/small-sigma --views fine --init sjc/weights/toy32 --steps 850 --lr 1.5e-4 \
    --warmup 50 --ema-decay 0.995 --view-caption 0.8 --threads 2 --seed 1 --timestep-power 2 --quiet
  python experiments/scripts/drift2d.py --guidance 2 1
  python experiments/scripts/drift2d.py --model toyprior/small-sigma/model
  sjc eval --model toyprior/small-sigma/model --prompts "a red cube" "a green cone" --variants paas --jobs 2 "${P2[@]}" \
    --out experiments/toy-prior/small-sigma/eval-cube-cone ;;&
methods10 | all)   # PAAS plain, the naive score, PAAS and SDS without view prompts at today's defaults (emptiness weight 10), ~25 min each
  for v in paas-plain naive paas:noview sds:noview; do sjc eval --seeds 3 --jobs 2 --variants $v "${P2[@]}" --out experiments/toy-prior/emptiness/eval-${v/:/-}-emptiness-10; done ;;&
finer-views | all)   # the exact prior with 16 azimuth sectors (a scratch patch, reverted after), 12 prompts x 3 seeds, ~4 min each
  V=experiments/toy-prior/views
  sjc eval --prior closed-form --view-scheme fine --variants paas --seeds 3 --jobs 2 --out $V/closed-form-fine-12
  git apply $V/finer-scheme.patch
  sjc eval --prior closed-form --view-scheme finer --variants paas --seeds 3 --jobs 2 --out $V/closed-form-finer-12 || true
  git apply -R $V/finer-scheme.patch ;;&
elevation-bands | all)   # the exact prior with the fine-bands scheme (elevation words), 12 prompts x 3 seeds, ~2 min
  sjc eval --prior closed-form --view-scheme fine-bands --variants paas --seeds 3 --jobs 2 --out experiments/toy-prior/views/closed-form-fine-bands-12 ;;&
bands | all)   # the shipped (fine-bands) model: 2D check on 3 more seeds, SJC guidance 1.5 / 2.5, the methods on 3 seeds
  B=experiments/toy-prior/bands
  for s in 100 200 300; do sjc prior check --data toyprior --seed $s --out $B/check-seed-$s; done
  sjc prior check --data toyprior --view all --n 1 --out $B/check-views   # with the 32 view prompts, ~30 min
  for g in 1.5 2.5; do sjc eval --seeds 1 --jobs 2 --variants paas --guidance-scale $g --polish-guidance-scale $g --out $B/eval-guidance-$g; done
  sjc eval --seeds 3 --jobs 2 --variants sds paas-plain naive paas:noview sds:noview "${P2[@]}" --out $B/eval-methods   # ~105 min (run as --seeds 1 first, then resumed)
  mkdir -p toyprior/before && git archive 8edff67 sjc/weights/toy32 | tar -x -C toyprior/before   # the model before, for the 2D drift
  for m in sjc/weights/toy32 toyprior/before/sjc/weights/toy32; do
    python experiments/scripts/drift2d.py --model $m --prompts "a blue sphere" "a purple sphere" "a red cube" "a green cone"; done ;;&
bands-sweep | all)   # the shipped model: SJC sigma range (seed 0) and 2 noise samples per step (3 seeds), 3 (seed 0), ~30 + 42 + 14 min; the polish, ~14 + 16 min
  B=experiments/toy-prior/bands
  for r in "0.5 10" "2 10" "1 20"; do set -- $r
    sjc eval --seeds 1 --jobs 2 --variants paas --sigma-min $1 --sigma-max $2 "${P2[@]}" --out $B/eval-sigma-$1-$2; done
  sjc eval --seeds 3 --jobs 2 --variants paas --num-noise 2 "${P2[@]}" --out $B/eval-num-noise-2   # run as --seeds 1 first, then resumed
  sjc eval --seeds 1 --jobs 2 --variants paas --num-noise 3 "${P2[@]}" --out $B/eval-num-noise-3
  python experiments/scripts/polish_sweep.py --out $B/polish-sweep --seeds 1 --jobs 2 "${P2[@]}" \
    --settings default none sigma-0.2-1 sigma-0.1-1 guidance-1.5 lr-0.02 sds-weighting   # ~14 min
  grep -E '"setting": "(default|guidance-1.5)"' $B/polish-sweep.jsonl > $B/polish-guidance-1.5.jsonl   # seed 0, resumed
  python experiments/scripts/polish_sweep.py --out $B/polish-guidance-1.5 --seeds 3 --jobs 2 "${P2[@]}" --settings default guidance-1.5 ;;&
polish-guidance | all)   # the polish at guidance 1.5 (the default since 2026-12-04): the main table before it (docs/eval.json until then), ~21 min; two noise samples with it
  B=experiments/toy-prior/bands   # (the main table itself at 1.5: the eval block's first line)
  sjc eval --seeds 3 --jobs 2 --variants paas "${P2[@]}" --out $B/eval-polish-guidance-2
  sjc eval --seeds 3 --jobs 2 --variants paas --num-noise 2 --out $B/eval-num-noise-2-polish-1.5 ;;&   # ~33 min
polish-noise | all)   # the polish's own noise samples and four more polish settings (seed 0, ~37 min), then K = 2 with 4 polish samples (3 seeds, ~34 min; seed 0 with 1,200 polish steps)
  B=experiments/toy-prior/bands   # (the sweep was run as two commands, 4 and 4 settings with "default" in both; its rows are the same)
  python experiments/scripts/polish_sweep.py --out $B/polish-sweep-2 --seeds 1 --jobs 2 \
    --settings default guidance-1.25 num-noise-2 num-noise-4 lr-0.1 lr-0.2 steps-1200
  sjc eval --seeds 3 --jobs 2 --variants paas --num-noise 2 --polish-num-noise 4 --out $B/eval-num-noise-2-polish-noise-4
  sjc eval --seeds 1 --jobs 2 --variants paas --num-noise 2 --polish-num-noise 4 --polish-steps 1200 \
    --out $B/eval-num-noise-2-polish-noise-4-steps-1200 ;;&   # ~16 min
continue | all)   # the rest of the 2-hour budget as more steps from the shipped weights (not shipped), ~17 min + 7 min
  sjc prior train --data toyprior --out toyprior/continued --init sjc/weights/toy32 --steps 1150 --lr 1.5e-4 \
    --warmup 50 --ema-decay 0.995 --seed 1 --threads 2
  sjc eval --seeds 1 --jobs 2 --variants paas --model toyprior/continued/model "${P2[@]}" --out experiments/toy-prior/bands/continued/eval ;;&
wide | all)   # the shipped model (48/96/192, bfloat16; the train block): its seed-0 probe before it was shipped, and the oracle on this CPU
  sjc eval --seeds 1 --jobs 2 --variants paas --model toyprior/train-wide/model --out experiments/toy-prior/wide/probe-seed-0 \
    --prompts "a red cube" "a pink cube with a ball on its front" "a blue mug" "a green cone"   # ~4 min
  sjc eval --jobs 2 --variants oracle --out experiments/toy-prior/wide/eval-oracle-epyc   # ~10 min
  for v in sds paas-plain naive paas:noview sds:noview; do   # the methods with it, seed 0, ~10 min each
    sjc eval --seeds 1 --jobs 2 --variants $v --out experiments/toy-prior/wide/methods-seed-0-${v/:/-}; done
  for v in sds paas-plain naive paas:noview sds:noview; do   # over seeds 0-2, reusing the loop's seed-0 runs: 24 runs, ~2 h each on an AVX2-only EPYC
    sjc eval --seeds 3 --jobs 2 --variants $v --reuse experiments/toy-prior/wide/methods-seed-0-${v/:/-}.json \
      --out experiments/toy-prior/wide/methods-${v/:/-}; done
  python experiments/scripts/merge_evals.py docs/toy-prior/eval-methods \
    --variants paas sds paas-plain naive paas:noview sds:noview \
    --files docs/eval.json experiments/toy-prior/wide/methods-{sds,paas-plain,naive,paas-noview,sds-noview}.json   # PAAS: the main table
  for s in 100 200 300; do   # ~32 min each on an AVX2-only EPYC
    sjc prior check --data toyprior --seed $s --out docs/toy-prior/check-seed-$s; done
  # seed 0 of the main table with the channels-last U-Net (the CPU default since 2026-12-05), ~42 min on an AVX2-only EPYC
  sjc eval --seeds 1 --jobs 2 --variants paas --out experiments/toy-prior/wide/eval-seed-0-channels-last
  sjc eval --prompts "a green cone" "a cyan cone" --seeds 1 --jobs 2 --variants paas --elev-min -20 \
    --out experiments/toy-prior/wide/probe-cones-elev-min-20   # cameras down to -20 degrees, ~9 min
  # 2026-12-06, a 2-core Intel Xeon with AMX: the check with the 32 view prompts (~41 min), the first 300 training
  # steps (~5.5 min; peak RSS from /usr/bin/time -v), seed 0 of the main table again (~25 min), three probes (~21 min)
  sjc prior check --data toyprior --view all --n 1 --out docs/toy-prior/check-views
  sjc prior train --data toyprior --out toyprior/first-300 --threads 2 --stop-after 300
  cp toyprior/first-300/loss.csv experiments/toy-prior/wide/loss-first-300-xeon-amx.csv
  sjc eval --seeds 1 --jobs 2 --variants paas --out experiments/toy-prior/wide/eval-seed-0-xeon-amx
  MC=("a green cone" "a cyan cone" "a blue mug" "an orange mug")
  sjc eval --prompts "${MC[@]}" --seeds 1 --jobs 2 --variants paas --density-shift -2 \
    --out experiments/toy-prior/wide/probe-mugs-cones-density-shift-2
  sjc eval --prompts "${MC[@]}" --seeds 1 --jobs 2 --variants paas --guidance-scale 3 \
    --out experiments/toy-prior/wide/probe-mugs-cones-guidance-3
  sjc eval --prompts "a blue mug" "an orange mug" --seeds 1 --jobs 2 --variants paas --elev-min 45 \
    --out experiments/toy-prior/wide/probe-mugs-elev-min-45
  # 2026-12-06, a 2-core AMD EPYC with AVX-512 BF16: no training cameras below 15 degrees (~8 min); where the blue
  # mug's solid is wrong, learned prior against oracle (two runs side by side, ~3 min)
  sjc eval --prompts "${MC[@]}" --seeds 1 --jobs 2 --variants paas --elev-min 15 \
    --out experiments/toy-prior/wide/probe-mugs-cones-elev-min-15
  sjc eval --prompts "${MC[@]}" --seeds 1 --jobs 2 --variants paas --emptiness-scale 100 \
    --out experiments/toy-prior/wide/probe-mugs-cones-emptiness-scale-100   # ~10 min
  for m in paas oracle; do sjc generate "a blue mug" --method $m --no-video --no-mesh --out-dir outputs/mug-$m
    python experiments/scripts/occupancy_profile.py outputs/mug-$m; done ;;&
toy-bench | all)   # sjc bench's toy cell at today's defaults (2,000 steps, emptiness weight 10), ~1.5 min; the U-Net layout, ~6 min
  sjc bench --threads 2 --configs toy --out docs/bench/renderer_cpu_toy.json
  sjc bench unet --threads 2 --out docs/bench/unet_layout_cpu_2threads.json   # the U-Net layout, NCHW vs channels-last, ~3 min each
  sjc bench unet --threads 1 --out docs/bench/unet_layout_cpu_1thread.json ;;&
renderer | all)   # issue 6: fast vs dense renderer over whole runs, the sweep, and eval with the dense renderer
  sjc bench --threads 2 --out docs/bench/renderer_cpu.json   # its toy cell was measured at 1,000 steps and emptiness weight 1 (today's: toy-bench)
  sjc bench sweep --threads 2 --plot docs/images/renderer-sweep.png --out docs/bench/renderer_sweep.json
  sjc eval --prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 "${OLD[@]}" --renderer dense --out experiments/toy-prior/sweep/sigma-1-10-dense ;;
esac

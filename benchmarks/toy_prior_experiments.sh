#!/usr/bin/env bash
# Reproduces the numbers in docs/toy-prior.md, docs/eval*.md and docs/performance.md on a 2-core CPU.
# Run from the repository root with the package installed (.venv/bin on PATH). Each block is independent.
set -euo pipefail
export SJC_CACHE="${SJC_CACHE:-$HOME/.cache/sjc}"
SWEEP_PROMPTS=("a red cube" "a blue mug" "a green cube" "a pink cube with a ball on its front")

case "${1:-all}" in
train | all)
  sjc prior dataset --out toyprior                                   # 7 shapes × 2000 views, ~4 min
  sjc prior train --data toyprior --out toyprior/train --steps 3000  # batch 64, resumable
  cp -r toyprior/train/model/. sjc/weights/toy32/ ;;&
check | all)
  sjc prior check --data toyprior --out docs/toy-prior/check         # 2D sample accuracy
  sjc paas2d "a red cube" "a blue sphere" "a green cube" "an orange mug" --data toyprior \
    --methods paas naive sds --out docs/toy-prior/paas2d.png ;;&
defaults | all)   # the SJC defaults of the toy prior, one seed, 4 prompts (2 held out)
  sjc eval --prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 --out docs/toy-prior/sweep/default
  for g in 1 7.5; do
    sjc eval --prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 --guidance-scale $g --out docs/toy-prior/sweep/guidance-$g
  done
  sjc eval --prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 --sigma-min 0.02 --sigma-max 10 --out docs/toy-prior/sweep/sigma-0.02-10
  sjc eval --prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 --sigma-min 0.3 --sigma-max 2 --out docs/toy-prior/sweep/sigma-0.3-2
  sjc eval --prompts "${SWEEP_PROMPTS[@]}" --variants paas --jobs 2 --emptiness-weight 100 --out docs/toy-prior/sweep/emptiness-100 ;;&
eval | all)   # the main table: 12 prompts (6 held out) × 3 seeds, PAAS and the oracle ceiling
  sjc eval --seeds 3 --jobs 2 --variants paas oracle --out docs/eval ;;&
methods | all)   # gradient forms and view prompts
  sjc eval --prompts "${SWEEP_PROMPTS[@]}" --seeds 2 --jobs 2 \
    --variants paas paas-plain naive sds paas:noview --out docs/eval-methods ;;&
renderer | all)   # issue 6: fast vs dense renderer, and the eval table with the dense renderer
  sjc bench --out docs/bench/renderer_cpu.json
  sjc bench sweep --plot docs/images/renderer-sweep.png --out docs/bench/renderer_sweep.json
  sjc eval --variants paas --jobs 2 --renderer dense --out docs/eval-dense ;;
esac

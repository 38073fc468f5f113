#!/usr/bin/env bash
# Issue 19's learning evidence on a 2-core CPU machine (no GPU), shared with other jobs: DrQ-v2
# with the implicit-attention encoder (encoder='attention': 1-pixel tokens, FAVOR+ with 64
# orthogonal features, top 32 tokens as [centre, importance * value]) on
# results/run_cpu_seer.sh's recipe: 24px cartpole_balance, action repeat 4, one update per
# agent step, batch 128, 256-unit MLPs, lr 3e-4, exploration std over 5000 agent steps,
# 2 seeds (--num_seeds=2, vmapped), 20k frames, evaluated every 2000 frames (5 episodes).
# 64 features, not the preset's 256, for CPU time.
# The conv baseline is results/cpu_seer/drqv2-cartpole_balance-1-2 (the same command with the
# conv encoder; CONV=1 reruns it here).
set -euo pipefail
cd "$(dirname "$0")/.."
source results/cpu_24px_recipe.sh
COMMON=(--task=cartpole_balance "${CPU_24PX_RECIPE[@]}" --seed=1 --num_seeds=2 --num_frames="${NUM_FRAMES:-20000}"
  --config.eval_every_frames=2000 --config.log_every_frames=2000)
python -m pixelzoo.launch.train --agent=iap --config.ia_features=64 \
  --workdir=results/cpu_attention/iap-cartpole_balance-1-2 "${COMMON[@]}"
if [[ "${CONV:-0}" == 1 ]]; then
  python -m pixelzoo.launch.train --agent=drqv2 \
    --workdir=results/cpu_attention/drqv2-cartpole_balance-1-2 "${COMMON[@]}"
fi
python -m pixelzoo.launch.plot results/cpu_attention results/cpu_seer/drqv2-cartpole_balance-1-2 \
  --out=results/cpu_attention/plots

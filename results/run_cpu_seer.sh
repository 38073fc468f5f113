#!/usr/bin/env bash
# Issue 13's learning evidence on a 2-core CPU machine (no GPU): DrQ-v2 with and without SEER
# on the same reduced pixel setting, 2 seeds each (one process per agent, --num_seeds=2):
# results/run_cpu_presets.sh's 24px cartpole_balance recipe (action repeat 4, one update
# per agent step, batch 128, 256-unit MLPs, lr 3e-4, exploration std over 5000 agent steps),
# 20k frames, evaluated every 2000 frames (5 episodes). SEER freezes at 8000 frames
# (2000 agent steps) with 4 stored copies per observation.
set -euo pipefail
cd "$(dirname "$0")/.."
source results/cpu_24px_recipe.sh
COMMON=(--task=cartpole_balance "${CPU_24PX_RECIPE[@]}" --seed=1 --num_seeds=2 --num_frames="${NUM_FRAMES:-20000}"
  --config.eval_every_frames=2000 --config.log_every_frames=2000)
python -m pixelzoo.launch.train --agent=drqv2 --workdir=results/cpu_seer/drqv2-cartpole_balance-1-2 "${COMMON[@]}"
python -m pixelzoo.launch.train --agent=seer --workdir=results/cpu_seer/seer-cartpole_balance-1-2 \
  --config.seer_freeze_frames=8000 --config.seer_num_copies=4 "${COMMON[@]}"
python -m pixelzoo.launch.plot results/cpu_seer --out=results/cpu_seer/plots

#!/usr/bin/env bash
# Issue 3's evidence: every preset on the same small real task and budget, on a 2-core CPU
# machine (no GPU): DrQ-v2's 24px cartpole_balance recipe of results/run_cpu_learning.sh
# (action repeat 4, one update per agent step, batch 128, 256-unit MLPs, lr 3e-4, exploration
# std decaying over 5000 agent steps), 1 seed, evaluated every 4000 frames (5 episodes).
# drqv2 and drq were first run by the same command with --num_frames=20000 (they are then
# skipped here as finished); the other presets ran to 12000 frames for CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
source results/cpu_24px_recipe.sh
python -m pixelzoo.launch.sweep --out=results/cpu_presets --agents=drqv2,drq,flare,alix,gpl,d2rl \
  --seeds=1 --num_frames="${NUM_FRAMES:-12000}" --max_parallel=1 \
  --tasks=cartpole_balance "${CPU_24PX_RECIPE[@]}" --config.eval_every_frames=4000 \
  --config.log_every_frames=4000
python -m pixelzoo.launch.plot results/cpu_presets --out=results/cpu_presets/plots

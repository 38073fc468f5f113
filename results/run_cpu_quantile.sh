#!/usr/bin/env bash
# Issue 19 (part 2)'s learning evidence on a 2-core CPU machine (no GPU): GPL with scalar
# critics (gpl) against GPL with quantile critics (gpl_quantile, 51 quantiles, kappa 1), both
# on the DrQ-v2 base from proprioceptive state on cartpole_swingup, the same 3 seeds in one
# process per agent (--num_seeds=3, one vmapped update). The state recipe of
# results/run_cpu_learning.sh: action repeat 4, one update per agent step, batch 128,
# 256-unit MLPs, lr 3e-4, exploration std over 5000 agent steps; 40k frames, evaluated every
# 4000 frames (5 episodes). Run with `nice -n 10` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
COMMON=(--task=cartpole_swingup --seed=1 --num_seeds=3 --num_frames="${NUM_FRAMES:-40000}"
  --config.obs_type=state --config.batch_size=128 --config.hidden_dim=256
  --config.action_repeat=4 --config.update_every_steps=1 --config.lr=3e-4
  --config.stddev_steps=5000 --config.num_eval_episodes=5 --config.eval_every_frames=4000
  --config.log_every_frames=4000 --config.checkpoint_every_frames=20000)
python -m pixelzoo.launch.train --agent=gpl --workdir=results/cpu_quantile/gpl-cartpole_swingup-1-3 "${COMMON[@]}"
python -m pixelzoo.launch.train --agent=gpl_quantile \
  --workdir=results/cpu_quantile/gpl_quantile-cartpole_swingup-1-3 "${COMMON[@]}"
python -m pixelzoo.launch.plot results/cpu_quantile --out=results/cpu_quantile/plots

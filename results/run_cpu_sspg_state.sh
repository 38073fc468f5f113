#!/usr/bin/env bash
# Issue 18's learning evidence on a 2-core CPU (no GPU): sspg against drq from state on
# cartpole_swingup and reacher_easy, seeds 1-3 trained together (one vmapped update,
# --num_seeds=3), each preset's own recipe (sspg: action repeat 2, an update every 2 agent
# steps, 4,000 seed frames; drq: DrQ's PlaNet action repeat per task, 8 on cartpole and 4 on
# reacher), both with 256-unit MLPs instead of 1024 to fit the CPU, 3 evaluation episodes
# every 10k frames. NUM_FRAMES (default 100000) is how far each run goes; a stopped run
# resumes from its checkpoint (every 10k frames) when this is run again. TASKS (default
# "cartpole_swingup reacher_easy") and AGENTS (default "sspg drq") pick the runs. Workdirs:
# results/sspg/state_<task>/<agent>.
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES="${NUM_FRAMES:-100000}"
# sspg's training chains are capped at 6 steps (sspg_train_max_steps; the preset: 16): on
# cartpole the running average of reasoning steps stayed near 2 (L = 3), so the cap only
# bounds the update of sspg_train_program='masked' (before 2026-12-04 the only program;
# 'per_length', now the default, runs L steps anyway).
EXTRA_sspg="--config.sspg_train_max_steps=6"
EXTRA_drq=""
for task in ${TASKS:-cartpole_swingup reacher_easy}; do
  for agent in ${AGENTS:-sspg drq}; do
    EXTRA_NAME="EXTRA_$agent"; EXTRA="${!EXTRA_NAME:-}"
    python -m pixelzoo.launch.train --agent="$agent" --task="$task" --seed=1 \
      --num_seeds=3 --num_frames="$FRAMES" --workdir="results/sspg/state_$task/$agent" \
      --config.obs_type=state --config.hidden_dim=256 --config.eval_every_frames=10000 \
      --config.num_eval_episodes=3 --config.log_every_frames=2000 \
      --config.checkpoint_every_frames=10000 $EXTRA
  done
  python -m pixelzoo.launch.plot "results/sspg/state_$task" \
    --out="results/sspg/state_$task/plots" --noreference
done

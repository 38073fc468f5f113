#!/usr/bin/env bash
# Issue 20's pixel smoke run on a 2-core CPU (no GPU): Routine SAC (rtsac) from 48px pixels
# (conv encoder, one random shift, frame stack 3) on cartpole_swingup, one seed, to show the
# pixel path trains end to end: the replay's windows of L = 4 pixel transitions, the L next
# observations encoded without gradient. To fit the CPU: action repeat 2 (the state recipe
# is 1), batch 32, 256-unit MLPs, 1,000 uniform agent steps and a burst of 100 updates (the
# recipe: 1,000) at the first update. NUM_FRAMES (default 10000) frames, evaluated at the
# start and the end (one episode each).
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES="${NUM_FRAMES:-10000}"
python -m pixelzoo.launch.train --agent=rtsac --task=cartpole_swingup --seed=1 \
  --num_frames="$FRAMES" --workdir=results/routines/pixels48_cartpole_swingup \
  --config.obs_type=pixels --config.aug=shift --config.image_size=48 \
  --config.action_repeat=2 --config.num_seed_frames=2000 --config.routine_warmup_updates=100 \
  --config.batch_size=32 --config.hidden_dim=256 --config.eval_every_frames="$FRAMES" \
  --config.num_eval_episodes=1 --config.log_every_frames=1000 \
  --config.checkpoint_every_frames=2000

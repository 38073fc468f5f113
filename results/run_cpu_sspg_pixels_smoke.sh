#!/usr/bin/env bash
# Issue 18's pixel smoke run on a shared 2-core CPU: sspg's pixel path (conv encoder, 48px,
# the preset's recipe otherwise) on cartpole_swingup, one seed, with a small batch (32),
# 256-unit MLPs, 1,000 seed frames and 6 training chain steps to fit the CPU; NUM_FRAMES
# (default 20000) frames, one evaluation episode at the start and the end.
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES="${NUM_FRAMES:-20000}"
python -m pixelzoo.launch.train --agent=sspg --task=cartpole_swingup --seed=1 \
  --num_frames="$FRAMES" --workdir=results/sspg/pixels48_cartpole_swingup \
  --config.image_size=48 --config.batch_size=32 --config.hidden_dim=256 \
  --config.num_seed_frames=1000 --config.eval_every_frames="$FRAMES" --config.num_eval_episodes=1 \
  --config.log_every_frames=500 --config.checkpoint_every_frames="$FRAMES" \
  --config.sspg_train_max_steps=6

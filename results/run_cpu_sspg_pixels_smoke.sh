#!/usr/bin/env bash
# Issue 18's pixel smoke run on a shared 2-core CPU: sspg's pixel path (conv encoder, 48px,
# the preset's recipe otherwise) on cartpole_swingup, one seed, with a smaller batch (64),
# 256-unit MLPs and 2,000 seed frames to fit the CPU; NUM_FRAMES (default 20000) frames.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pixelzoo.launch.train --agent=sspg --task=cartpole_swingup --seed=1 \
  --num_frames="${NUM_FRAMES:-20000}" --workdir=results/sspg/pixels48_cartpole_swingup \
  --config.image_size=48 --config.batch_size=64 --config.hidden_dim=256 \
  --config.num_seed_frames=2000 --config.eval_every_frames=2000 --config.num_eval_episodes=1 \
  --config.log_every_frames=1000 --config.checkpoint_every_frames=2000

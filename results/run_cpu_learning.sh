#!/usr/bin/env bash
# CPU learning evidence for the foundation (2-core machine, no GPU): DrQ-v2 from
# proprioceptive state on cartpole_swingup, and from pixels at a reduced image size on
# cartpole_balance. Workdirs go to results/cpu/; checkpoints are not committed.
# Deviations from the 84px recipe, for CPU time: action repeat 4 with one update per agent
# step (the recipe's one update per 4 frames), batch 64 for pixels (128 for state), MLPs of
# 256 units for state, lr 3e-4, a short exploration schedule (stddev_steps), a 32px image.
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--config.action_repeat=4 --config.update_every_steps=1 --config.lr=3e-4
        --config.stddev_steps=5000 --config.num_eval_episodes=5 --config.log_every_frames=4000
        --config.checkpoint_every_frames=20000)
case "${1:-all}" in
  pixels|all)
    python -m pixelzoo.launch.train --agent=drqv2 --task=cartpole_balance --seed=1 --num_frames=32000 \
      --workdir=results/cpu/drqv2-pixels32-cartpole_balance-1 "${common[@]}" \
      --config.image_size=32 --config.batch_size=64 --config.eval_every_frames=4000 ;;&
  pixels24|all)
    python -m pixelzoo.launch.train --agent=drqv2 --task=cartpole_balance --seed=1 --num_frames=100000 \
      --workdir=results/cpu/drqv2-pixels24-cartpole_balance-1 "${common[@]}" \
      --config.image_size=24 --config.batch_size=128 --config.hidden_dim=256 \
      --config.eval_every_frames=4000 ;;&
  state|all)
    python -m pixelzoo.launch.train --agent=drqv2 --task=cartpole_swingup --seed=1 --num_frames=60000 \
      --workdir=results/cpu/drqv2-state-cartpole_swingup-1 "${common[@]}" \
      --config.obs_type=state --config.batch_size=128 --config.hidden_dim=256 \
      --config.eval_every_frames=10000 ;;
esac

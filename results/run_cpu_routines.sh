#!/usr/bin/env bash
# Issue 20's learning evidence on a shared 2-core CPU (no GPU): rtsac (Routine SAC,
# the released state recipe: L = 4, routine_dim 4 on cartpole, lr 1e-3, 1,000 uniform steps,
# a burst of 1,000 updates at step 1,000) against pixelzoo's SAC from state (the drq preset
# with one augmentation copy, lr 3e-4, 256-unit MLPs, as the authors' SAC baseline) on
# cartpole_swingup at action repeat 1, seeds 1-3 trained together (--num_seeds=3).
# NUM_FRAMES (default 100000, the issue's budget) is how far each run goes; a stopped run
# resumes from its checkpoint (every 5,000 frames) when run again. AGENTS picks the presets.
# NETWORKS=released runs both with the released state networks (no trunk: the MLPs read the
# state; orthogonal gain sqrt(2)), and rtsac with the released step order (each critic its
# own step, then a prefix encoder + decoder step), in
# results/routines/state_cartpole_swingup_released_nets.
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES="${NUM_FRAMES:-100000}"
OUT=results/routines/state_cartpole_swingup
# The pixelzoo networks: DrQ-v2's trunk (Linear -> LayerNorm -> tanh), gain 1, joint step
# (the rtsac preset's default from state is the released networks and order since 2026-12-04).
NETS=(--config.trunk=layernorm --config.mlp_init_gain=1.0)
ORDER=(--config.routine_step_order=joint)
if [ "${NETWORKS:-pixelzoo}" = released ]; then
  OUT=results/routines/state_cartpole_swingup_released_nets
  NETS=(--config.trunk=none --config.mlp_init_gain=1.4142135623730951)
  ORDER=(--config.routine_step_order=per_critic)
fi
COMMON=(--task=cartpole_swingup --seed=1 --num_seeds=3 --num_frames="$FRAMES"
        --config.obs_type=state --config.action_repeat=1 --config.eval_every_frames=5000
        --config.num_eval_episodes=3 --config.log_every_frames=1000
        --config.checkpoint_every_frames=5000 "${NETS[@]}")
for agent in ${AGENTS:-rtsac sac}; do
  if [ "$agent" = sac ]; then
    python -m pixelzoo.launch.train --agent=drq "${COMMON[@]}" \
      --workdir="$OUT/sac" --config.hidden_dim=256 \
      --config.lr=3e-4 --config.batch_size=256 --config.num_seed_frames=1000 \
      --config.num_target_augs=1 --config.num_q_augs=1
  else
    python -m pixelzoo.launch.train --agent="$agent" "${COMMON[@]}" "${ORDER[@]}" \
      --workdir="$OUT/$agent"
  fi
done
python -m pixelzoo.launch.plot "$OUT" --out="$OUT/plots" --noreference

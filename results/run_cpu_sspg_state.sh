#!/usr/bin/env bash
# Issue 18's learning evidence on a shared 2-core CPU (no GPU): sspg against drq from state
# on cartpole_swingup, seeds 1-3 trained together (one vmapped update, --num_seeds=3), each
# preset's own recipe (sspg: action repeat 2, update every 2 agent steps, 4,000 seed frames;
# drq: action repeat 8 on cartpole, as DrQ's PlaNet recipe), both with 256-unit MLPs instead
# of 1024 to fit the CPU, 3 evaluation episodes every 10k frames. NUM_FRAMES (default 100000)
# is how far each run goes; a stopped
# run resumes from its checkpoint when this is run again. AGENTS (default "sspg drq") picks
# the presets (the two ran as two parallel invocations, AGENTS=sspg and AGENTS=drq).
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES="${NUM_FRAMES:-100000}"
# sspg's update runs 6 chain steps masked to L (sspg_train_max_steps; the preset: 16), for CPU
# time: cartpole's running average of reasoning steps stays near 2.
EXTRA_sspg="--config.sspg_train_max_steps=6"
EXTRA_drq=""
for agent in ${AGENTS:-sspg drq}; do
  EXTRA_NAME="EXTRA_$agent"; EXTRA="${!EXTRA_NAME:-}"
  python -m pixelzoo.launch.train --agent="$agent" --task=cartpole_swingup --seed=1 \
    --num_seeds=3 --num_frames="$FRAMES" --workdir="results/sspg/state_cartpole_swingup/$agent" \
    --config.obs_type=state --config.hidden_dim=256 --config.eval_every_frames=10000 \
    --config.num_eval_episodes=3 --config.log_every_frames=2000 \
    --config.checkpoint_every_frames=10000 $EXTRA
done
python -m pixelzoo.launch.plot results/sspg/state_cartpole_swingup \
  --out=results/sspg/state_cartpole_swingup/plots --noreference

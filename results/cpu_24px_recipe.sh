# Sourced by the reduced-pixel CPU comparisons on cartpole_balance (run_cpu_presets.sh,
# run_cpu_seer.sh, run_cpu_attention.sh): their shared recipe for a 2-core CPU, 24px images,
# action repeat 4, one update per agent step, batch 128, 256-unit MLPs, lr 3e-4, exploration
# std decaying over 5000 agent steps, 5 evaluation episodes, checkpoints every 10k frames.
CPU_24PX_RECIPE=(--config.image_size=24 --config.batch_size=128 --config.hidden_dim=256
  --config.action_repeat=4 --config.update_every_steps=1 --config.lr=3e-4
  --config.stddev_steps=5000 --config.num_eval_episodes=5 --config.checkpoint_every_frames=10000)

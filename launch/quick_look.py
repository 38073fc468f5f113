"""The README's quick look: a run that learns within minutes on a 2-core CPU, and its plot.

DrQ-v2 from proprioceptive state on cartpole_balance (action repeat 4, one update per agent
step, batch 128, 256-unit MLPs, lr 3e-4, exploration noise decaying over 2000 agent steps),
evaluated every 2000 frames: its return goes from a random policy's ~300 to ~1000 by
30k frames. The forecast line of a slow pixel run names the same command.
"""
WORKDIR = "runs/quick-look"
TRAIN_ARGS = (
    "--agent=drqv2", "--task=cartpole_balance", "--num_frames=40000",
    "--config.obs_type=state", "--config.action_repeat=4", "--config.update_every_steps=1",
    "--config.lr=3e-4", "--config.batch_size=128", "--config.hidden_dim=256",
    "--config.stddev_steps=2000", "--config.num_seed_frames=1000",
    "--config.eval_every_frames=2000", "--config.num_eval_episodes=5")


def train_args(workdir: str = WORKDIR) -> list[str]:
    return [*TRAIN_ARGS, f"--workdir={workdir}"]


def plot_args(workdir: str = WORKDIR) -> list[str]:
    """Writes <workdir>/plots/cartpole_balance.png (no official pixel curves overlaid)."""
    return [workdir, f"--out={workdir}/plots", "--noreference"]


def train_command(workdir: str = WORKDIR) -> str:
    return " ".join(["python -m pixelzoo.launch.train", *train_args(workdir)])


def plot_command(workdir: str = WORKDIR) -> str:
    return " ".join(["python -m pixelzoo.launch.plot", *plot_args(workdir)])

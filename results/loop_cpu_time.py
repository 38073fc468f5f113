"""Wall and CPU time per agent step of the training loop, for a forced environment split.

    python results/loop_cpu_time.py --num_seeds=8 [--kept=4 --workers=1]

Steps a real `launch.loop.Run` with `launch.loop.agent_step` (the issue-12 setting: state
observations, 32-unit networks, batch 32) for --steps agent steps after the seed steps,
and reads the CPU time of this process (XLA's threads included) and of its environment
workers from /proc/<pid>/stat. Without --kept/--workers the split is
`envs.launcher_split`'s. BENCHMARKS.md, issue 12, holds what it printed.
"""
import os
import tempfile
import time

from absl import app, flags

from pixelzoo import agents, envs
from pixelzoo.launch import loop

flags.DEFINE_integer("num_seeds", 8, "K")
flags.DEFINE_integer("steps", 3000, "timed agent steps")
flags.DEFINE_integer("kept", None, "environments kept in this process (forced split)")
flags.DEFINE_integer("workers", None, "worker processes (forced split)")
FLAGS = flags.FLAGS


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv) -> None:
    del argv
    import jax
    if FLAGS.kept is not None:
        envs.launcher_split = lambda num_envs: (FLAGS.kept, FLAGS.workers)
    config = agents.build_config("drqv2", obs_type="state", hidden_dim=32, feature_dim=16,
                                 batch_size=32, num_eval_episodes=0)
    spec = {"agent": "drqv2", "task": "cartpole_swingup", "seed": 1,
            "num_seeds": FLAGS.num_seeds, "num_frames": 10**9, "config": config.to_dict()}
    with tempfile.TemporaryDirectory() as workdir:
        run = loop.Run(spec, workdir)
        try:
            state = run.initial_state()
            episode, metrics = loop._Episode(run), loop.MetricsWindow()
            timesteps = episode.start(run.train_pool.reset(), state)
            step = 0

            def steps(count: int) -> None:
                nonlocal state, timesteps, step
                for _ in range(count):
                    if episode.ended(timesteps):
                        timesteps = episode.start(run.train_pool.reset(), state)
                    state, timesteps = loop.agent_step(run, state, step, timesteps, episode,
                                                       metrics)
                    step += 1

            steps(run.num_seed_steps + 10)
            jax.block_until_ready(state)
            pids = [os.getpid()] + [p.pid for p in run.train_pool._processes]
            before, start = [cpu_seconds(pid) for pid in pids], time.perf_counter()
            steps(FLAGS.steps)
            jax.block_until_ready(state)
            wall = time.perf_counter() - start
            used = [cpu_seconds(pid) - b for pid, b in zip(pids, before)]
            workers = run.train_pool.num_workers
        finally:
            run.close()
    per_step = 1000 / FLAGS.steps
    print(f"K={FLAGS.num_seeds} split={envs.launcher_split(FLAGS.num_seeds)} "
          f"wall {wall * per_step:.3f} ms/step, CPU: launcher {used[0] * per_step:.3f} + "
          f"workers {sum(used[1:]) * per_step:.3f} ms/step ({workers} workers)")


if __name__ == "__main__":
    app.run(main)

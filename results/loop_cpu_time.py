"""Wall and CPU time per agent step of the training loop, for a forced environment split.

    python results/loop_cpu_time.py --num_seeds=8 [--kept=4 --workers=1]

Steps a real `launch.run.Run` with a `launch.driver.Driver` (the issue-12 setting: state
observations, 32-unit networks, batch 32) for --steps agent steps after the seed steps,
and reads the CPU time of this process (XLA's threads included) and of its environment
workers from /proc/<pid>/stat. Without --kept/--workers the split is
`envs.launcher_split`'s. BENCHMARKS.md, issue 12, holds what it printed.
"""
import os
import tempfile
import time

from absl import app, flags

from pixelzoo import envs
from pixelzoo.launch.driver import Driver
from pixelzoo.launch.run import Run
from pixelzoo.launch.run_spec import check_run_spec, compose_run_spec

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
    split = ((FLAGS.kept, FLAGS.workers) if FLAGS.kept is not None
             else envs.launcher_split(FLAGS.num_seeds))
    spec = check_run_spec(compose_run_spec(
        "drqv2", "cartpole_swingup", dict(obs_type="state", hidden_dim=32, feature_dim=16,
                                          batch_size=32, num_eval_episodes=0),
        seed=1, num_seeds=FLAGS.num_seeds, num_frames=10**9), jax.devices())
    with tempfile.TemporaryDirectory() as workdir:
        run = Run(spec, workdir, env_split=split)
        try:
            driver = Driver(run, run.initial_state())
            driver.run_steps(run.num_seed_steps + 10)
            jax.block_until_ready(driver.state)
            pids = [os.getpid()] + run.train_pool.worker_pids
            before, start = [cpu_seconds(pid) for pid in pids], time.perf_counter()
            driver.run_steps(FLAGS.steps)
            jax.block_until_ready(driver.state)
            wall = time.perf_counter() - start
            used = [cpu_seconds(pid) - b for pid, b in zip(pids, before)]
            workers = run.train_pool.num_workers
        finally:
            run.close()
    per_step = 1000 / FLAGS.steps
    print(f"K={FLAGS.num_seeds} split={split} "
          f"wall {wall * per_step:.3f} ms/step, CPU: launcher {used[0] * per_step:.3f} + "
          f"workers {sum(used[1:]) * per_step:.3f} ms/step ({workers} workers)")


if __name__ == "__main__":
    app.run(main)

r"""Times one learner update on synthetic batches and reports replay bytes per transition.

    python -m launch.benchmark --agent=drqv2 --batch_size=256 --image_size=84

Prints a table, then one JSON line (update_ms is the median over --repeats timed updates
after --warmup untimed ones, compile included only in the warmup).
"""
import json
import statistics
import sys
import time

from absl import app, flags

import agents

FLAGS = flags.FLAGS
flags.DEFINE_string("agent", "drqv2", "Agent preset.")
flags.DEFINE_integer("batch_size", 256, "Batch size of the update.")
flags.DEFINE_integer("image_size", 84, "Square image size in pixels.")
flags.DEFINE_integer("frame_stack", 3, "Frames stacked on channels.")
flags.DEFINE_integer("action_dim", 6, "Action dimensions (6 as in the PyTorch yardstick).")
flags.DEFINE_integer("warmup", 2, "Untimed updates (the first compiles).")
flags.DEFINE_integer("repeats", 5, "Timed updates.")


def main(argv: list[str]) -> None:
    del argv
    import jax
    import numpy as np
    from dm_env import specs

    from replay import Batch, ReplayBuffer

    if FLAGS.agent not in agents.names():
        sys.exit(f"error: unknown agent {FLAGS.agent!r}; choose one of: "
                 f"{', '.join(agents.names())}")
    size, batch_size = FLAGS.image_size, FLAGS.batch_size
    obs_spec = specs.Array((size, size, 3 * FLAGS.frame_stack), np.uint8, "pixels")
    action_spec = specs.BoundedArray((FLAGS.action_dim,), np.float32, -1.0, 1.0, "action")
    try:
        agent = agents.make(FLAGS.agent, obs_spec, action_spec, batch_size=batch_size,
                            image_size=size, frame_stack=FLAGS.frame_stack,
                            replay_capacity=max(batch_size, 1000))
    except ValueError as error:
        sys.exit(f"error: {error}")
    rng = np.random.default_rng(0)

    def batch() -> Batch:
        pixels = lambda: rng.integers(0, 256, (batch_size, *obs_spec.shape), dtype=np.uint8)
        return Batch(pixels(), rng.uniform(-1, 1, (batch_size, FLAGS.action_dim)).astype(
            np.float32), rng.random(batch_size).astype(np.float32),
            np.full(batch_size, 0.99 ** 3, np.float32), pixels())

    batches = [batch(), batch()]
    update = jax.jit(agent.update)
    state = agent.init(jax.random.key(0))
    for i in range(FLAGS.warmup):
        state, metrics = update(state, batches[i % 2], jax.random.key(i))
        jax.block_until_ready(metrics)
    times = []
    for i in range(FLAGS.repeats):
        start = time.perf_counter()
        state, metrics = update(state, batches[i % 2], jax.random.key(100 + i))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    capacity = 1000
    buffer = ReplayBuffer(obs_spec, action_spec, capacity=capacity)
    result = {
        "agent": FLAGS.agent, "batch_size": batch_size, "image_size": size,
        "update_ms": round(statistics.median(times) * 1000, 1),
        "replay_bytes_per_transition": buffer.nbytes / capacity,
        "num_devices": jax.local_device_count(), "device_kind": jax.devices()[0].device_kind,
    }
    for name, value in result.items():
        print(f"{name:>28}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)

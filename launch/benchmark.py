r"""Measures a learner's speed on this machine: the update, the environment and the whole
training loop, plus replay memory.

    python -m pixelzoo.launch.benchmark --agent=drqv2 --batch_size=256 --image_size=84

Prints a table, then one JSON line:
- update_ms: median wall time of one update call (U = --updates_per_call fused updates) on
  synthetic batches, over --repeats calls after --warmup untimed ones (compile included
  only in the warmup); update_ms_per_update divides it by U.
- env_frames_per_s: frames (environment steps, action repeat included) per second of one
  real environment stepped with random actions, rendering included.
- train_frames_per_s: frames per second of the training loop itself (act, step, store,
  sample and update at the agent's update rate) over --train_steps agent steps, after a
  compile warm-up; the rate a run reaches once its seed frames are done.
- replay_bytes_per_transition: ReplayBuffer.nbytes / capacity at this image size.
- num_devices, device_kind: the devices the update is split over.
"""
import json
import statistics
import sys
import time

from absl import app, flags

from pixelzoo import agents
from pixelzoo import envs

FLAGS = flags.FLAGS
flags.DEFINE_string("agent", "drqv2", "Agent preset.")
flags.DEFINE_string("task", "walker_walk", "DMC task for the environment and loop timings "
                    "(walker_walk: 6 action dims, as in the PyTorch yardstick).")
flags.DEFINE_integer("batch_size", 256, "Batch size of the update.")
flags.DEFINE_integer("image_size", 84, "Square image size in pixels.")
flags.DEFINE_integer("frame_stack", 3, "Frames stacked on channels.")
flags.DEFINE_integer("action_repeat", 2, "Action repeat of the environment.")
flags.DEFINE_integer("hidden_dim", None, "MLP width (default: the preset's).")
flags.DEFINE_integer("updates_per_call", 1, "Updates fused into one jitted call.")
flags.DEFINE_integer("num_devices", None, "Devices to split the batch over (default: all).")
flags.DEFINE_integer("warmup", 2, "Untimed update calls (the first compiles).")
flags.DEFINE_integer("repeats", 5, "Timed update calls.")
flags.DEFINE_integer("env_steps", 250, "Agent steps of the environment timing.")
flags.DEFINE_integer("train_steps", 40, "Agent steps of the training-loop timing.")


def _synthetic_batches(rng, obs_spec, action_dim: int, leading: tuple[int, int]):
    from pixelzoo.replay import Batch
    import numpy as np
    pixels = lambda: rng.integers(0, 256, (*leading, *obs_spec.shape), dtype=np.uint8)
    return Batch(pixels(), rng.uniform(-1, 1, (*leading, action_dim)).astype(np.float32),
                 rng.random(leading).astype(np.float32),
                 np.full(leading, 0.99 ** 3, np.float32), pixels())


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.agent not in agents.names():
        sys.exit(f"error: unknown agent {FLAGS.agent!r}; choose one of: "
                 f"{', '.join(agents.names())}")
    if FLAGS.task not in envs.names():
        sys.exit(f"error: unknown task {FLAGS.task!r}; choose one of: {', '.join(envs.names())}")
    envs.ensure_gl_backend()  # before JAX starts its threads (the probe forks)
    import jax
    import numpy as np

    from pixelzoo.replay import ReplayBuffer

    size, batch_size, calls = FLAGS.image_size, FLAGS.batch_size, FLAGS.updates_per_call
    env = envs.make(FLAGS.task, seed=0, image_size=size, frame_stack=FLAGS.frame_stack,
                    action_repeat=FLAGS.action_repeat)
    obs_spec, action_spec = env.observation_spec(), env.action_spec()
    action_dim = int(action_spec.shape[0])
    try:
        agent = agents.make(FLAGS.agent, obs_spec, action_spec, task=FLAGS.task,
                            task_group=envs.task_group(FLAGS.task), batch_size=batch_size,
                            image_size=size, frame_stack=FLAGS.frame_stack,
                            action_repeat=FLAGS.action_repeat, updates_per_call=calls,
                            replay_capacity=max(batch_size * calls, 10_000),
                            **({} if FLAGS.hidden_dim is None
                               else {"hidden_dim": FLAGS.hidden_dim}))
        learner = agents.Learner(agent, agents.make_mesh(FLAGS.num_devices), calls)
    except ValueError as error:
        sys.exit(f"error: {error}")
    config = agent.config
    rng = np.random.default_rng(0)

    # The update alone, on synthetic batches.
    batches = [learner.put_batch(_synthetic_batches(rng, obs_spec, action_dim,
                                                    (calls, batch_size))) for _ in range(2)]
    state = learner.put_state(agent.init(jax.random.key(0)))
    for i in range(FLAGS.warmup):
        state, metrics = learner.update(state, batches[i % 2], jax.random.key(i))
        jax.block_until_ready(metrics)
    times = []
    for i in range(FLAGS.repeats):
        start = time.perf_counter()
        state, metrics = learner.update(state, batches[i % 2], jax.random.key(100 + i))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    update_ms = statistics.median(times) * 1000

    # The environment alone, random actions; its transitions fill the replay.
    replay = ReplayBuffer(obs_spec, action_spec, config.replay_capacity, nstep=config.nstep,
                          discount=config.discount, frame_stack=FLAGS.frame_stack)
    timestep = env.reset()  # the first reset sets up rendering: not timed
    replay.add(timestep)
    start = time.perf_counter()
    for _ in range(FLAGS.env_steps):
        if timestep.last():
            timestep = env.reset()
            replay.add(timestep)
        action = rng.uniform(-1, 1, action_dim).astype(np.float32)
        timestep = env.step(action)
        replay.add(timestep, action)
    env_frames_per_s = FLAGS.env_steps * FLAGS.action_repeat / (time.perf_counter() - start)

    # The training loop: act, step, store, and every update_every * U steps sample + update.
    act = jax.jit(agent.act)
    period = config.update_every_steps * calls

    def loop_step(step: int, timestep, state):
        if timestep.last():
            timestep = env.reset()
            replay.add(timestep)
        action = np.asarray(act(state, timestep.observation[None], jax.random.key(step))[0])
        if step % period == 0:
            sample = replay.sample(calls * batch_size, rng)
            sample = jax.tree.map(lambda x: x.reshape(calls, batch_size, *x.shape[1:]), sample)
            state, metrics = learner.update(state, learner.put_batch(sample),
                                            jax.random.key(step))
            jax.block_until_ready(metrics)
        timestep = env.step(action)
        replay.add(timestep, action)
        return timestep, state

    timestep, state = loop_step(0, timestep, state)  # compiles act
    start = time.perf_counter()
    for step in range(1, FLAGS.train_steps + 1):
        timestep, state = loop_step(step, timestep, state)
    train_frames_per_s = (FLAGS.train_steps * FLAGS.action_repeat
                          / (time.perf_counter() - start))

    capacity = 1000
    result = {
        "agent": FLAGS.agent, "task": FLAGS.task, "batch_size": batch_size,
        "image_size": size, "updates_per_call": calls,
        "update_ms": round(update_ms, 1),
        "update_ms_per_update": round(update_ms / calls, 1),
        "env_frames_per_s": round(env_frames_per_s, 1),
        "train_frames_per_s": round(train_frames_per_s, 1),
        "replay_bytes_per_transition": ReplayBuffer(obs_spec, action_spec,
                                                    capacity=capacity).nbytes / capacity,
        "num_devices": learner.num_devices, "device_kind": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
    }
    for name, value in result.items():
        print(f"{name:>28}  {value}")
    print(json.dumps(result))


def run() -> None:
    """Console script `pixelzoo-benchmark` (= python -m pixelzoo.launch.benchmark)."""
    app.run(main)


if __name__ == "__main__":
    run()

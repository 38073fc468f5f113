r"""Measures a learner's speed on this machine: the update, the environment, the training
loop's own cost per agent step (split into its parts), and replay memory.

    python -m pixelzoo.launch.benchmark --agent=drqv2 --batch_size=256 --image_size=84
    python -m pixelzoo.launch.benchmark --agent=drqv2 --task=cartpole_swingup \
        --obs_type=state --hidden_dim=32 --feature_dim=16 --batch_size=32 \
        --num_seeds=8 --parts=loop

Prints a table, then one JSON line:
- update_ms: median wall time of one update call (U = --updates_per_call fused updates) on
  synthetic batches, over --repeats calls after --warmup untimed ones (compile included
  only in the warmup); update_ms_per_update divides it by U.
- env_frames_per_s: frames (environment steps, action repeat included) per second of one
  real environment stepped with random actions, rendering included.
- loop_ms_per_step: wall time of one agent step of the training loop (all --num_seeds
  seeds), timed over --loop_steps steps after the seed steps and a compile warm-up, by
  stepping a real `launch.run.Run` (environment workers, replays, learner) with
  `launch.driver.Driver`, the very driver `train` runs. loop_ms_per_seed_step divides it by K;
  loop_frames_per_s is the training frames per second it gives (all seeds).
  loop_parts_ms_per_step splits it: act (policy on the device, result to the host),
  env_step (sending actions to the environment workers, stepping the environments kept in
  this process, waiting for the workers' timesteps: the environment IPC and more),
  replay_sample, transfer (batches to the devices), update_dispatch (launching the jitted
  update; its compute overlaps what follows until act needs the new state), replay_add,
  and other (the rest: the loop's Python).
- update_temp_mib: XLA's scratch memory of the compiled update call (activations,
  gradients, intermediates; `Learner.update_memory`), update_state_mib its arguments
  (state and batch), peak_rss_mib the process's peak resident memory so far.
- act_ms (--parts=act): median wall time of one exploration act call of one seed on one
  synthetic observation (jitted, after a compile warm-up), over --act_repeats calls, the
  acting state carried from call to call (SSPG: 64 chains for k reasoning steps, plus its
  fixed exploration chain); act_reasoning_steps_mean: the mean k of those calls (SSPG only).
- replay_bytes_per_transition: ReplayBuffer.nbytes / capacity at this image size.
- With --parts=seer (any preset on pixels: both bases, ddpg and sac, have SEER), after
  SEER's freeze:
  seer_update_ms (the heads-only update on synthetic latent batches, timed as update_ms)
  and its ratio to update_ms, seer_replay_bytes_per_transition (a latent replay's
  nbytes / capacity) and its ratio to the frames', and the loop figures again with the
  run frozen (loop_* after the freeze: the Run is frozen after its warm-up).
- num_devices, device_kind: the devices the update is split over.
"""
import json
import resource
import statistics
import sys
import tempfile
import time

from absl import app, flags

from pixelzoo import agents
from pixelzoo import envs
from pixelzoo.launch.quiet_logs import quiet_library_logs

FLAGS = flags.FLAGS
flags.DEFINE_string("agent", "drqv2", "Agent preset.")
flags.DEFINE_string("task", "walker_walk", "DMC task for the environment and loop timings "
                    "(walker_walk: 6 action dims, as in the PyTorch yardstick).")
flags.DEFINE_enum("obs_type", "pixels", ["pixels", "state"], "Observations.")
flags.DEFINE_integer("batch_size", 256, "Batch size of the update.")
flags.DEFINE_integer("image_size", 84, "Square image size in pixels.")
flags.DEFINE_integer("frame_stack", 3, "Frames stacked on channels.")
flags.DEFINE_integer("action_repeat", 2, "Action repeat of the environment.")
flags.DEFINE_integer("hidden_dim", None, "MLP width (default: the preset's).")
flags.DEFINE_integer("feature_dim", None, "Trunk feature width (default: the preset's).")
flags.DEFINE_integer("updates_per_call", 1, "Updates fused into one jitted call.")
flags.DEFINE_integer("num_devices", None, "Devices to train on (default: all).")
flags.DEFINE_integer("num_seeds", 1, "Seeds of the loop timing (K).")
flags.DEFINE_list("parts", ["update", "env", "loop"],
                  "What to time: update, act, env, loop, and seer (the update and replay after "
                  "SEER's freeze, and the loop frozen).")
flags.DEFINE_integer("seer_num_copies", 4, "SEER: stored copies per observation.")
flags.DEFINE_integer("warmup", 2, "Untimed update calls (the first compiles).")
flags.DEFINE_integer("repeats", 5, "Timed update calls.")
flags.DEFINE_integer("env_steps", 250, "Agent steps of the environment timing.")
flags.DEFINE_integer("loop_steps", 500, "Agent steps of the training-loop timing.")
flags.DEFINE_integer("act_repeats", 50, "Timed act calls (--parts=act).")


def _config_overrides() -> dict:
    overrides = dict(obs_type=FLAGS.obs_type, batch_size=FLAGS.batch_size,
                     seer_num_copies=FLAGS.seer_num_copies,
                     image_size=FLAGS.image_size, frame_stack=FLAGS.frame_stack,
                     action_repeat=FLAGS.action_repeat, updates_per_call=FLAGS.updates_per_call,
                     replay_capacity=max(FLAGS.batch_size * FLAGS.updates_per_call, 10_000),
                     num_eval_episodes=0)
    for name in ("hidden_dim", "feature_dim"):
        if getattr(FLAGS, name) is not None:
            overrides[name] = getattr(FLAGS, name)
    return overrides


def _synthetic_batches(rng, obs_spec, action_dim: int, leading: tuple[int, ...]):
    import numpy as np
    from pixelzoo.replay import Batch
    if obs_spec.dtype == np.uint8:
        obs = lambda: rng.integers(0, 256, (*leading, *obs_spec.shape), dtype=np.uint8)
    else:
        obs = lambda: rng.normal(size=(*leading, *obs_spec.shape)).astype(np.float32)
    return Batch(obs(), rng.uniform(-1, 1, (*leading, action_dim)).astype(np.float32),
                 rng.random(leading).astype(np.float32),
                 np.full(leading, 0.99 ** 3, np.float32), obs())


def time_update(agent, num_devices: int | None, init=None) -> dict:
    """update_ms: one fused update call of one seed on synthetic batches."""
    import jax
    import numpy as np
    calls, batch_size = FLAGS.updates_per_call, FLAGS.batch_size
    learner = agents.Learner(agent, agents.make_mesh(num_devices), calls)
    rng = np.random.default_rng(0)
    batches = [learner.put_batch(_synthetic_batches(rng, agent.obs_spec, agent.action_dim,
                                                    (calls, batch_size))) for _ in range(2)]
    state = learner.put_state((init or agent.init)(jax.random.key(0)))
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
    memory = learner.update_memory(state, batches[0], jax.random.key(0))
    return {"update_ms": round(update_ms, 2),
            "update_temp_mib": round(memory["temp"] / 2**20, 1),
            "update_state_mib": round(memory["arguments"] / 2**20, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1),
            "update_ms_per_update": round(update_ms / calls, 2),
            "num_devices": learner.num_devices, "device_kind": jax.devices()[0].device_kind,
            "backend": jax.default_backend()}


def time_act(agent) -> dict:
    """act_ms: one exploration act call of one seed on a synthetic observation."""
    import jax
    import numpy as np
    obs = _synthetic_batches(np.random.default_rng(0), agent.obs_spec, agent.action_dim,
                             (1,)).obs
    state = agent.init(jax.random.key(0))
    stateful = agent.stateful_acting
    act = jax.jit(agent.act_and_update if stateful else agent.act)
    times = []
    for i in range(FLAGS.warmup + FLAGS.act_repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(act(state, obs, jax.random.key(i)))
        if i >= FLAGS.warmup:
            times.append(time.perf_counter() - start)
        if stateful:
            state = state.replace(acting=result[1])
    timing = {"act_ms": round(statistics.median(times) * 1000, 3)}
    if stateful:
        timing["act_reasoning_steps_mean"] = round(
            float(state.acting["window_steps_sum"] / state.acting["window_count"]), 3)
    return timing


def time_env(env) -> dict:
    """env_frames_per_s: one environment in this process, random actions."""
    import numpy as np
    rng = np.random.default_rng(0)
    action_dim = int(env.action_spec().shape[0])
    timestep = env.reset()  # the first reset sets up rendering: not timed
    start = time.perf_counter()
    for _ in range(FLAGS.env_steps):
        if timestep.last():
            timestep = env.reset()
        timestep = env.step(rng.uniform(-1, 1, action_dim).astype(np.float32))
    return {"env_frames_per_s": round(FLAGS.env_steps * FLAGS.action_repeat
                                      / (time.perf_counter() - start), 1)}


def time_seer_update(agent, num_devices: int | None) -> dict:
    """seer_update_ms: one heads-only update call on synthetic latent batches."""
    import dataclasses
    latent_agent = dataclasses.replace(agent, update=agent.seer.update_latent,
                                       obs_spec=agent.seer.latent_spec)
    result = time_update(latent_agent, num_devices, init=lambda key: agent.seer.freeze(
        agent.init(key)))
    return {"seer_update_ms": result["update_ms"]}


def time_loop(spec, loop_steps: int, freeze: bool = False) -> dict:
    """loop_ms_per_step and its parts: `loop_steps` agent steps of a `launch.driver.Driver`
    on a real Run of `spec` (a checked RunSpec), after the seed steps and enough steps to
    compile act and the update; freeze: SEER's freeze first (the frozen loop)."""
    import jax
    from pixelzoo.launch.driver import Driver, PartTimer
    from pixelzoo.launch.run import LoopState, Run
    with tempfile.TemporaryDirectory() as workdir:
        run = Run(spec, workdir)
        try:
            driver = Driver(run, run.initial_state())
            driver.run_steps(run.num_seed_steps + 2 * run.update_period + 2)
            if freeze:               # SEER: convert the replay, compile the frozen path
                driver.freeze(LoopState(step=driver.step))
                driver.run_steps(2 * run.update_period + 2)
            jax.block_until_ready(driver.state)
            driver.metrics.fetch()
            timer = PartTimer()
            start = time.perf_counter()
            driver.run_steps(loop_steps, timer)
            with timer("update_wait"):      # the last update's compute, not yet waited for
                jax.block_until_ready(driver.state)
            total = time.perf_counter() - start
            driver.metrics.fetch()
        finally:
            run.close()
    per_step = 1000 * total / loop_steps
    parts = {name: round(1000 * seconds / loop_steps, 4)
             for name, seconds in sorted(timer.seconds.items())}
    parts["other"] = round(per_step - sum(parts.values()), 4)
    return {"num_seeds": spec.num_seeds, "loop_ms_per_step": round(per_step, 4),
            "loop_ms_per_seed_step": round(per_step / spec.num_seeds, 4),
            "loop_frames_per_s": round(1000 * spec.num_seeds * spec.config.action_repeat
                                       / per_step, 1),
            "loop_parts_ms_per_step": parts}


def checked_spec(seer: bool):
    """The RunSpec the flags describe (seed 1, 10^9 frames), checked on this machine's
    devices; seer: with SEER's freeze set (at 10^9 frames: `time_loop` freezes it)."""
    import jax
    from pixelzoo.launch.run_spec import check_run_spec, compose_run_spec
    overrides = _config_overrides()
    if seer:
        overrides["seer_freeze_frames"] = 10**9
    spec = compose_run_spec(FLAGS.agent, FLAGS.task, overrides, seed=1,
                            num_seeds=FLAGS.num_seeds, num_frames=10**9,
                            num_devices=FLAGS.num_devices)
    return check_run_spec(spec, jax.devices(), jax.process_count())


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()    # third-party INFO only with --verbosity, as launch.train
    unknown = set(FLAGS.parts) - {"update", "act", "env", "loop", "seer"}
    if unknown:
        sys.exit(f"error: unknown --parts {sorted(unknown)}; choose from update, act, env, "
                 "loop, seer")
    if FLAGS.obs_type == "pixels":
        envs.ensure_gl_backend()  # before JAX starts its threads (the probe forks)
    from pixelzoo.replay import ReplayBuffer
    try:
        seer_spec = checked_spec(seer=True) if "seer" in FLAGS.parts else None
        spec = checked_spec(seer=False)
    except ValueError as error:
        sys.exit(f"error: {error}")
    config = spec.config
    env = envs.make(FLAGS.task, seed=0, obs_type=FLAGS.obs_type, image_size=FLAGS.image_size,
                    frame_stack=FLAGS.frame_stack, action_repeat=FLAGS.action_repeat)
    agent = agents.make_from_config(FLAGS.agent, config, env.observation_spec(),
                                    env.action_spec())
    result = {"agent": FLAGS.agent, "task": FLAGS.task, "obs_type": FLAGS.obs_type,
              "batch_size": FLAGS.batch_size, "image_size": FLAGS.image_size,
              "updates_per_call": FLAGS.updates_per_call}
    if "update" in FLAGS.parts:
        result.update(time_update(agent, spec.num_devices))
    if "act" in FLAGS.parts:
        result.update(time_act(agent))
    if "env" in FLAGS.parts:
        result.update(time_env(env))
    if "loop" in FLAGS.parts:
        result.update(time_loop(spec, FLAGS.loop_steps))
    if seer_spec is not None:
        result.update(time_seer_update(agent, spec.num_devices))
        if "update_ms" in result:
            result["seer_update_ratio"] = round(result["seer_update_ms"] / result["update_ms"], 4)
        capacity = 1000
        result["seer_replay_bytes_per_transition"] = ReplayBuffer(
            agent.seer.latent_spec, env.action_spec(), capacity=capacity).nbytes / capacity
        frozen = time_loop(seer_spec, FLAGS.loop_steps, freeze=True)
        result.update({f"frozen_{name}": value for name, value in frozen.items()
                       if name.startswith("loop_")})
    capacity = 1000
    result["replay_bytes_per_transition"] = ReplayBuffer(
        env.observation_spec(), env.action_spec(), capacity=capacity).nbytes / capacity
    for name, value in result.items():
        print(f"{name:>28}  {value}")
    print(json.dumps(result))


def run() -> None:
    """Console script `pixelzoo-benchmark` (= python -m pixelzoo.launch.benchmark)."""
    app.run(main)


if __name__ == "__main__":
    run()

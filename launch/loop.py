"""The training loop behind launch.train: act, step, store, update, evaluate, log, checkpoint.

    train(spec, workdir, should_stop)   # runs or resumes the run `spec` describes

`train` builds a `launch.run.Run` (environments, agent, learner, replays, checkpoints),
restores its newest checkpoint into a `LoopState` (exactly what a checkpoint stores of the
loop), and steps it with a `launch.driver.Driver`, the same driver `launch.benchmark` times.
Every periodic event (evaluation, logging, checkpoints) is decided by `due`; SEER's freeze
is `launch.seer_phase`'s.
"""
import time
from typing import Any, Callable, Mapping

import jax

from pixelzoo.agents.learner import SEED_AXIS
from pixelzoo.launch import processes
from pixelzoo.launch.driver import Driver
from pixelzoo.launch.evaluation import evaluate_and_update
from pixelzoo.launch.progress import mesh_summary
from pixelzoo.launch.run import LoopState, Run
from pixelzoo.launch.run_logs import MetricsWindow, NonFiniteLossError, RunLogs
from pixelzoo.launch.run_spec import RunSpec

__all__ = ["LoopState", "MetricsWindow", "NonFiniteLossError", "Run", "due", "train"]


def due(every_frames: int, previous_frame: int, frame: int) -> bool:
    """Whether an event every `every_frames` falls due at `frame`, the loop having last
    looked at `previous_frame`: it does at the first frame at or after each multiple of
    every_frames (frame 0 included, from previous_frame -1)."""
    return frame // every_frames > previous_frame // every_frames


def train(spec: RunSpec | Mapping[str, Any], workdir: str, should_stop: Callable[[], bool],
          num_devices: int | None = None, seed_shards: int | None = None,
          wandb: bool = False) -> bool:
    """Runs (or resumes) the run `spec` describes in `workdir`.

    spec: a checked `RunSpec` (`launch.run_spec.check_run_spec`), or its config.json dict,
    then placed on `num_devices` devices (all by default), the seeds split into
    `seed_shards` device groups (`agents.make_seed_mesh`). K = num_seeds seeds train
    together: one vmapped agent state, K environments and replays, every key, env seed and
    replay sample the same as in K single-seed runs. wandb: mirror the TensorBoard scalars
    to Weights & Biases (the W&B run's config: the config.json dict, or spec as given). Returns True when num_frames were reached, False when
    `should_stop()` asked to stop (after saving a checkpoint).
    """
    identity = spec.identity() if isinstance(spec, RunSpec) else dict(spec)
    if not isinstance(spec, RunSpec):
        spec = RunSpec.from_identity(spec, num_devices, seed_shards)
    run = Run(spec, workdir)
    logs = None
    try:
        state = run.initial_state()
        metric_names = run.metric_names(state)   # the pixel update's: the logs' columns
        restored = run.restore(state)
        state, loop = restored if restored is not None else (state, LoopState())
        resumed_frame = loop.step * run.config.action_repeat if restored else None
        logs = RunLogs(run, metric_names,
                       -1 if resumed_frame is None else resumed_frame, resumed_frame or 0,
                       identity if wandb else None)
        _announce(run, logs, resumed_frame)
        return _run_loop(run, logs, state, loop, resumed_frame, should_stop)
    finally:
        if logs is not None:
            logs.close()
        run.close()


def _announce(run: Run, logs: RunLogs, resumed_frame: int | None) -> None:
    """The run's first lines (process 0's): what trains, or where it resumes; then the mesh."""
    if resumed_frame is not None:
        logs.progress.show(f"resumed from checkpoint at frame {resumed_frame:,} in "
                           f"{run.workdir}")
    else:
        seeds = run.seeds
        which = f"seeds {seeds[0]}..{seeds[-1]}" if run.multi_seed else f"seed {seeds[0]}"
        logs.progress.show(f"training {run.spec.agent} on {run.spec.task} ({which}) for "
                           f"{run.spec.num_frames:,} frames in {run.workdir}")
    mesh = run.sharding.mesh
    devices_per_process = [sum(device.process_index == process for device in mesh.devices.flat)
                           for process in range(jax.process_count())]
    logs.progress.show(mesh_summary(devices_per_process, len(run.seeds), mesh.shape[SEED_AXIS],
                                    run.config.replay))


def _run_loop(run: Run, logs: RunLogs, state, loop: LoopState, resumed_frame: int | None,
              should_stop: Callable[[], bool]) -> bool:
    """The loop itself: the periodic events around each `Driver.agent_step`."""
    config, num_frames = run.config, run.spec.num_frames
    if resumed_frame is not None and resumed_frame >= num_frames:   # before any env reset
        logs.progress.show(f"done already: the checkpoint at frame {resumed_frame:,} reaches "
                           f"num_frames={num_frames:,}; raise --num_frames to train on")
        return True
    driver = Driver(run, state, loop.step)
    start_step, clock, time_before = loop.step, time.monotonic(), loop.total_time
    previous_frame = -1 if resumed_frame is None else resumed_frame
    # With several processes the stop request is agreed on (a collective) every so often.
    stop_check_period = 1 if jax.process_count() == 1 else 16

    def save(frame: int) -> None:
        if resumed_frame is not None and loop.step == start_step:
            return               # nothing has run since the checkpoint this run resumed from
        driver.metrics.fetch()   # never checkpoint a non-finite state
        loop.total_time = time_before + time.monotonic() - clock
        started = time.monotonic()
        run.save(frame, driver.state, loop)
        logs.checkpoint(frame, time.monotonic() - started)

    while True:
        frame = loop.step * config.action_repeat
        loop.total_time = time_before + time.monotonic() - clock
        if driver.episode_ended():
            loop.episode += 1
            logs.episode(driver.episode.rows(loop, frame, driver.state),
                         driver.metrics.episode_means()
                         or [{} for _ in run.seeds])
            driver.new_episode()
        if config.num_eval_episodes and (due(config.eval_every_frames, previous_frame, frame)
                                         or frame >= num_frames):
            rows, driver.state = evaluate_and_update(
                run, driver.state, loop, frame,
                logs.progress.evaluating(frame, config.num_eval_episodes))
            logs.evaluation(rows)
        if due(config.log_every_frames, previous_frame, frame) and frame > 0:
            logs.interval(frame, driver.metrics.interval_means())
        if frame >= num_frames:
            save(frame)
            logs.progress.show(f"done: {frame:,} frames in {loop.total_time / 60:.1f} min; "
                               f"logs in {run.workdir}")
            return True
        if (loop.step % stop_check_period == 0
                and processes.any_process(should_stop())):   # all processes stop together
            save(frame)
            return False
        if loop.step > start_step and due(config.checkpoint_every_frames, previous_frame,
                                          frame):
            save(frame)
        previous_frame = frame
        if run.seer is not None and run.seer.due(loop, frame):
            driver.freeze(loop)
            logs.progress.show(f"SEER: froze the encoder and trunks at frame {frame:,}; "
                               f"latent replay of {loop.latent_capacity:,} timesteps")
        driver.agent_step()
        loop.step += 1
        logs.progress.training(loop.step * config.action_repeat, driver.episode.returns)

"""The per-step driver of a run: what `launch.train`'s loop, `launch.benchmark` and
results/loop_cpu_time.py step a `Run` with.

    driver = Driver(run, run.initial_state())
    driver.run_steps(1000)                     # agent steps, new episodes as they end
    driver.run_steps(500, timer := PartTimer())   # timer.seconds: wall time per part

`agent_step` is one agent step of every seed; `Driver` holds what it carries from one step
to the next (state, timesteps, the episode under way, the learner metrics).
"""
import collections
import contextlib
import time

import numpy as np

from pixelzoo import agents
from pixelzoo.launch import processes
from pixelzoo.launch.run import LoopState, Run
from pixelzoo.launch.run_logs import MetricsWindow


class PartTimer:
    """Wall time per named part of `agent_step`, for launch.benchmark (`train` passes none)."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self._part, self._start = None, 0.0

    def __call__(self, part: str) -> "PartTimer":
        self._part = part
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc_info) -> None:
        self.seconds[self._part] += time.perf_counter() - self._start


class Episode:
    """The training episode under way: every seed's return, its length and start time."""

    def __init__(self, run: Run):
        self.run = run

    def start(self, timesteps: list, state: agents.AgentState | None = None) -> list:
        """Stores the episodes' first timesteps; returns them."""
        self.run.store(timesteps, state=state)
        self.returns = np.zeros(len(self.run.local_seeds))   # this process's seeds
        self.length, self.start_time = 0, time.monotonic()
        return timesteps

    def ended(self, timesteps: list) -> bool:
        ended = {timestep.last() for timestep in timesteps}
        if len(ended) > 1:
            raise RuntimeError("the seeds' episodes ended at different steps; "
                               "--num_seeds needs fixed-length episodes (every DMC task)")
        return ended == {True}

    def record(self, timesteps: list) -> None:
        self.returns += [float(timestep.reward) for timestep in timesteps]
        self.length += 1

    def rows(self, loop: LoopState, frame: int) -> list[dict]:
        """train.csv rows of the episode that just ended, one per seed (every process calls
        this together: the returns of all seeds are gathered)."""
        action_repeat, seeds = self.run.config.action_repeat, self.run.seeds
        returns = processes.gather(self.returns)
        fps = (self.length * action_repeat * len(seeds)
               / max(time.monotonic() - self.start_time, 1e-9))
        return [{"frame": frame, "seed": seed, "step": loop.step, "episode": loop.episode,
                 "episode_return": float(returns[index]),
                 "episode_length": self.length * action_repeat, "fps": fps,
                 "total_time": loop.total_time} for index, seed in enumerate(seeds)]


def agent_step(run: Run, state: agents.AgentState, step: int, timesteps: list,
               episode: Episode, metrics: MetricsWindow,
               timer: PartTimer | None = None) -> tuple[agents.AgentState, list]:
    """Agent step `step` of every seed: act, step the environments (in their workers, while
    the learner's update is dispatched), store the transitions. Returns (state, timesteps).

    When an update is due (`run.update_due`) it is one update call: with updates_per_call
    U > 1, U fused updates on U batches (run every U * update_every_steps agent steps, the
    same rate as U = 1). `timer` records the parts' wall times (launch.benchmark)."""
    part = timer or (lambda name: contextlib.nullcontext())
    with part("act"):
        actions, state = run.act_and_update(state, step,
                                            np.stack([t.observation for t in timesteps]))
    with part("env_step"):
        run.train_pool.step_async(actions)   # the environments step while the learner updates
    if run.update_due(step):
        with part("replay_sample"):
            host_batches = run.sample(step)
        with part("transfer"):
            device_batches = run.transfer(host_batches)
        with part("update_dispatch"):
            state, update_metrics = run.update(state, device_batches, step)
            metrics.add(step, update_metrics)
    with part("env_step"):
        timesteps = run.train_pool.step_wait()
    with part("replay_add"):
        run.store(timesteps, actions, state)
        episode.record(timesteps)
    return state, timesteps


class Driver:
    """Steps a `Run` from `state` at agent step `step`: its environments reset, the first
    timesteps stored. `state`, `step`, `timesteps`, `episode` and `metrics` are what one
    agent step hands the next."""

    def __init__(self, run: Run, state: agents.AgentState, step: int = 0,
                 metrics: MetricsWindow | None = None):
        self.run, self.state, self.step = run, state, step
        self.metrics = metrics or MetricsWindow(run.seeds if run.multi_seed else None)
        self.episode = Episode(run)
        self.timesteps = self.episode.start(run.train_pool.reset(), state)

    def episode_ended(self) -> bool:
        return self.episode.ended(self.timesteps)

    def new_episode(self) -> None:
        self.timesteps = self.episode.start(self.run.train_pool.reset(), self.state)

    def agent_step(self, timer: PartTimer | None = None) -> None:
        """`agent_step` at self.step, then self.step + 1."""
        self.state, self.timesteps = agent_step(self.run, self.state, self.step,
                                                self.timesteps, self.episode, self.metrics,
                                                timer)
        self.step += 1

    def run_steps(self, count: int, timer: PartTimer | None = None) -> None:
        """`count` agent steps, a new episode started wherever one ended (nothing logged)."""
        for _ in range(count):
            if self.episode_ended():
                self.new_episode()
            self.agent_step(timer)

    def freeze(self, loop: LoopState) -> None:
        """SEER's freeze of the run and its state now (`launch.seer_phase`)."""
        self.state = self.run.seer.freeze(self.state, loop)

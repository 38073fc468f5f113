"""Evaluation: deterministic-policy episodes of a run's evaluation environments, and the
eval.csv rows they give."""
import os
from typing import Callable

import numpy as np

from pixelzoo import agents
from pixelzoo import envs
from pixelzoo.launch import processes
from pixelzoo.launch.run import LoopState, Run
from pixelzoo.launch.run_logging import save_video

VIDEO_SIZE = 256


def evaluate(pool: envs.EnvPool, policy: Callable[[np.ndarray], np.ndarray],
             num_episodes: int, video_path: str | None,
             on_step: Callable[[int, np.ndarray], None] | None = None) -> list[dict[str, float]]:
    """Deterministic-policy episodes of every environment of `pool` (one per seed, stepped
    together): per environment, the mean return and length over `num_episodes`; an mp4 of
    the first environment's first episode if asked.

    policy: observations [K, ...] -> actions [K, A]; on_step: called after every step with
    (episode index, the environments' returns so far [K]) (the live progress line).
    """
    returns = np.zeros((num_episodes, len(pool)))
    lengths, frames = [], []
    for episode in range(num_episodes):
        timesteps = pool.reset()
        length = 0
        record = video_path is not None and episode == 0
        if record:
            frames.append(pool.call(0, "render", VIDEO_SIZE))
        while not timesteps[0].last():
            timesteps = pool.step(policy(np.stack([t.observation for t in timesteps])))
            returns[episode] += [float(t.reward) for t in timesteps]
            length += 1
            if on_step is not None:
                on_step(episode, returns[episode])
            if record:
                frames.append(pool.call(0, "render", VIDEO_SIZE))
        lengths.append(length * pool.action_repeat)
    if video_path is not None:
        save_video(video_path, frames)
    length = float(np.mean(lengths)) if lengths else 0.0
    return [{"episode_return": float(np.mean(returns[:, index])) if num_episodes
             else float("nan"), "episode_length": length} for index in range(len(pool))]


def evaluation_rows(run: Run, state: agents.AgentState, loop: LoopState, frame: int,
                    on_step: Callable[[int, np.ndarray], None] | None = None) -> list[dict]:
    """eval.csv rows of an evaluation at `frame`, one per seed (on_step: see `evaluate`)."""
    return evaluate_and_update(run, state, loop, frame, on_step)[0]


def evaluate_and_update(run: Run, state: agents.AgentState, loop: LoopState, frame: int,
                        on_step: Callable[[int, np.ndarray], None] | None = None
                        ) -> tuple[list[dict], agents.AgentState]:
    """(`evaluation_rows`, the state after the evaluation): an actor with acting state
    (SSPG's evaluation chains) carries it on to the next evaluation."""
    video = (os.path.join(run.workdir, "videos", f"eval_{frame}.mp4")
             if run.config.save_video else None)
    if video is not None and not processes.is_primary():
        video = None
    policy = run.eval_policy(state, loop.step)
    results = evaluate(run.eval_pool, policy, run.config.num_eval_episodes, video, on_step)
    names = ("episode_return", "episode_length")
    gathered = processes.gather({name: np.asarray([r[name] for r in results]) for name in names})
    return [{"frame": frame, "seed": seed, "step": loop.step, "episode": loop.episode,
             "total_time": loop.total_time,
             **{name: float(gathered[name][index]) for name in names}}
            for index, seed in enumerate(run.seeds)], policy.state

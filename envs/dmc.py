"""dm_control tasks as a dm_env.Environment, set up as in DrQ-v2.

Pixels (uint8 [S, S, 3 * frame_stack]) or state (float32 [D]) observations, actions in
[-1, 1] rescaled to the task's bounds, action repeat summing rewards. dm_control itself
is imported inside `make`, after the rendering backend is chosen.
"""
import collections
from collections.abc import Mapping
import numbers
import os
from typing import Any

import dm_env
from dm_env import specs
import numpy as np

from pixelzoo.envs import rendering
from pixelzoo.envs import tasks

OBS_TYPES = ("pixels", "state")
_QUADRUPED_CAMERA_ID = 2  # DrQ-v2's zoomed-in camera for quadruped
_MANIPULATION_CAMERA = "front_close"  # the camera of dm_control.manipulation's *_vision tasks
_MAX_SEED = 2**32  # numpy RandomState's bound


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def _check_settings(obs_type: str, image_size: int, frame_stack: int,
                    action_repeat: int) -> None:
    """Raises ValueError, with the allowed values, on a bad setting."""
    if obs_type not in OBS_TYPES:
        raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}.")
    _check_positive_int("image_size", image_size)
    _check_positive_int("frame_stack", frame_stack)
    _check_positive_int("action_repeat", action_repeat)


def camera_id(task: str) -> int | str:
    """The camera DrQ-v2 renders `task` from: 2 for quadruped, 'front_close' for
    manipulation tasks, 0 otherwise."""
    if task in tasks.MANIPULATION_TASKS:
        return _MANIPULATION_CAMERA
    domain, _ = tasks.SUITE_TASKS[task]
    return _QUADRUPED_CAMERA_ID if domain == "quadruped" else 0


def rescale_action(action: np.ndarray, minimum: np.ndarray,
                   maximum: np.ndarray) -> np.ndarray:
    """Maps `action` from [-1, 1] affinely onto [minimum, maximum], after clipping.

    Args:
      action: [A], any float dtype.
      minimum, maximum: [A] or scalars, the task's action bounds.
    Returns:
      float64 [A]: -1 -> minimum, 1 -> maximum.
    """
    clipped = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    minimum = np.asarray(minimum, dtype=np.float64)
    maximum = np.asarray(maximum, dtype=np.float64)
    return minimum + (clipped + 1.0) * 0.5 * (maximum - minimum)


def _flatten_state(observation: Mapping[str, Any]) -> np.ndarray:
    """Concatenates the observation dict's values in its order: float32 [D]."""
    parts = [np.asarray(value, dtype=np.float32).reshape(-1) for value in observation.values()]
    return np.concatenate(parts)


class DMCEnv(dm_env.Environment):
    """A dm_control environment with pixels or state, action repeat and frame stack.

    Observations: pixels uint8 [S, S, 3 * frame_stack], the stacked RGB frames on the
    channel axis, oldest first (the last 3 channels are the current frame; reset fills
    the stack with the first frame); or state float32 [D], the task's observations
    flattened in order (never stacked). Actions: float32 [A] in [-1, 1]. A step repeats
    the action `action_repeat` times, sums the rewards, multiplies the discounts and
    stops early when the episode ends; the last physics step alone is rendered.
    Suite episodes last 1000 physics steps (500 agent steps at action repeat 2) and end
    with discount 1.0 (a time limit); reach_duplo's last 250.
    """

    def __init__(self, env: dm_env.Environment, task: str, obs_type: str = "pixels",
                 image_size: int = 84, frame_stack: int = 3, action_repeat: int = 2,
                 camera: int | str = 0):
        """Wraps `env`, a dm_control environment (suite or composer) that has `physics`.

        Use `envs.make` rather than this: it checks the task and loads `env`.
        """
        _check_settings(obs_type, image_size, frame_stack, action_repeat)
        self._env = env
        self._task = task
        self._obs_type = obs_type
        self._image_size = int(image_size)
        self._frame_stack = int(frame_stack)
        self._action_repeat = int(action_repeat)
        self._camera = camera

        inner_action_spec = env.action_spec()
        self._inner_action_dtype = inner_action_spec.dtype
        self._action_minimum = np.broadcast_to(
            inner_action_spec.minimum, inner_action_spec.shape).astype(np.float64)
        self._action_maximum = np.broadcast_to(
            inner_action_spec.maximum, inner_action_spec.shape).astype(np.float64)
        self._action_spec = specs.BoundedArray(
            inner_action_spec.shape, np.float32, -1.0, 1.0, name="action")

        if obs_type == "pixels":
            self._observation_spec = specs.Array(
                (self._image_size, self._image_size, 3 * self._frame_stack), np.uint8,
                name="pixels")
        else:
            state_size = sum(int(np.prod(spec.shape)) for spec in env.observation_spec().values())
            self._observation_spec = specs.Array((state_size,), np.float32, name="state")

        self._frames: collections.deque[np.ndarray] = collections.deque(maxlen=self._frame_stack)
        self._needs_reset = True

    # Properties.

    @property
    def task(self) -> str:
        return self._task

    @property
    def obs_type(self) -> str:
        return self._obs_type

    @property
    def action_repeat(self) -> int:
        return self._action_repeat

    @property
    def frame_stack(self) -> int:
        """Frames stacked in pixel observations (state observations are never stacked)."""
        return self._frame_stack

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def physics(self) -> Any:
        """The wrapped dm_control environment's physics."""
        return self._env.physics

    def __repr__(self) -> str:
        return (f"DMCEnv(task={self._task!r}, obs_type={self._obs_type!r}, "
                f"image_size={self._image_size}, frame_stack={self._frame_stack}, "
                f"action_repeat={self._action_repeat})")

    # dm_env.Environment.

    def observation_spec(self) -> specs.Array:
        return self._observation_spec

    def action_spec(self) -> specs.BoundedArray:
        return self._action_spec

    def reward_spec(self) -> specs.Array:
        return specs.Array((), np.float32, name="reward")

    def discount_spec(self) -> specs.BoundedArray:
        return specs.BoundedArray((), np.float32, 0.0, 1.0, name="discount")

    def reset(self) -> dm_env.TimeStep:
        """Starts an episode: a FIRST TimeStep with reward and discount None."""
        inner_timestep = self._env.reset()
        self._needs_reset = False
        if self._obs_type == "pixels":
            frame = self.render()
            self._frames.clear()
            self._frames.extend([frame] * self._frame_stack)
        return dm_env.restart(self._observation(inner_timestep))

    def step(self, action: np.ndarray) -> dm_env.TimeStep:
        """Applies `action` (float [A] in [-1, 1]; clipped) `action_repeat` times.

        Returns a MID or LAST TimeStep with float32 reward (the sum) and discount (the
        product); after a LAST one, starts a new episode and returns its FIRST.
        """
        action = np.asarray(action)
        if action.shape != self._action_spec.shape:
            raise ValueError(
                f"action must have shape {self._action_spec.shape}, got {action.shape}.")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}.")
        if self._needs_reset:
            return self.reset()
        inner_action = rescale_action(action, self._action_minimum, self._action_maximum)
        inner_action = inner_action.astype(self._inner_action_dtype, copy=False)
        reward = 0.0
        discount = 1.0
        for _ in range(self._action_repeat):
            inner_timestep = self._env.step(inner_action)
            reward += inner_timestep.reward
            discount *= inner_timestep.discount
            if inner_timestep.last():
                break
        if self._obs_type == "pixels":
            self._frames.append(self.render())
        if inner_timestep.last():
            self._needs_reset = True
            step_type = dm_env.StepType.LAST
        else:
            step_type = dm_env.StepType.MID
        return dm_env.TimeStep(step_type, np.float32(reward), np.float32(discount),
                               self._observation(inner_timestep))

    def render(self, size: int | None = None) -> np.ndarray:
        """RGB frame of the current state from the task's camera: uint8 [size, size, 3].

        `size` defaults to image_size; it may be up to the model's offscreen buffer (at
        least 480 in the suite). Needs a GL backend, also for state environments.
        """
        size = self._image_size if size is None else size
        _check_positive_int("size", size)
        return self._env.physics.render(height=size, width=size, camera_id=self._camera)

    def close(self) -> None:
        self._env.close()

    def _observation(self, inner_timestep: dm_env.TimeStep) -> np.ndarray:
        if self._obs_type == "pixels":
            return np.concatenate(self._frames, axis=-1)
        return _flatten_state(inner_timestep.observation)


def use_gl_backend(obs_type: str) -> None:
    """Chooses the GL backend; state environments fall back to none at all."""
    if obs_type == "pixels":
        rendering.ensure_gl_backend()
        return
    try:
        rendering.ensure_gl_backend()
    except rendering.RenderingUnavailableError:
        os.environ.setdefault("MUJOCO_GL", "disabled")


def _load_inner_env(task: str, seed: int) -> dm_env.Environment:
    """Loads the dm_control environment of a checked task name."""
    # pylint: disable=import-outside-toplevel
    if task in tasks.MANIPULATION_TASKS:
        from dm_control import manipulation
        return manipulation.load(f"{tasks.MANIPULATION_TASKS[task]}_features", seed=seed)
    from dm_control import suite
    domain, task_name = tasks.SUITE_TASKS[task]
    return suite.load(domain, task_name, task_kwargs={"random": seed}, environment_kwargs=None)


def make(task: str, seed: int = 0, obs_type: str = "pixels", image_size: int = 84,
         frame_stack: int = 3, action_repeat: int = 2) -> DMCEnv:
    """A DrQ-v2-style environment for `task` (one of `envs.names()`).

    Args:
      task: e.g. 'walker_walk', 'cup_catch', 'reach_duplo'.
      seed: the task's random seed, an integer in [0, 2**32).
      obs_type: 'pixels' (uint8 [image_size, image_size, 3 * frame_stack]) or 'state'
        (float32 [D]).
      image_size: rendered height and width in pixels.
      frame_stack: frames stacked on channels; pixels only.
      action_repeat: physics steps per agent step.
    Raises:
      ValueError: unknown task or bad setting (checked before anything is loaded).
      RenderingUnavailableError: pixels requested and no GL backend works.
    """
    tasks.check_task(task)
    _check_settings(obs_type, image_size, frame_stack, action_repeat)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}.")
    use_gl_backend(obs_type)
    inner_env = _load_inner_env(task, int(seed))
    return DMCEnv(inner_env, task, obs_type=obs_type, image_size=image_size,
                  frame_stack=frame_stack, action_repeat=action_repeat,
                  camera=camera_id(task))

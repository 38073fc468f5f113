"""dm_control tasks as dm_env environments, set up as DrQ-v2 does.

    env = envs.make("walker_walk", seed=0)   # pixels: uint8 [84, 84, 9], actions in [-1, 1]

Importing this package is cheap: dm_control is imported by `make`, after the OpenGL
backend is chosen.
"""
from pixelzoo.envs.dmc import DMCEnv, make
from pixelzoo.envs.pool import (EnvPool, EnvWorkerError, default_num_workers,
                                 launcher_split)
from pixelzoo.envs.rendering import RenderingUnavailableError, ensure_gl_backend, worker_render_env
from pixelzoo.envs.tasks import DRQV2_TASKS, names, task_group

__all__ = [
    "DMCEnv",
    "DRQV2_TASKS",
    "EnvPool",
    "EnvWorkerError",
    "default_num_workers",
    "launcher_split",
    "worker_render_env",
    "RenderingUnavailableError",
    "ensure_gl_backend",
    "make",
    "names",
    "task_group",
]

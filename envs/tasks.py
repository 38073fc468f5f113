"""Task names: dm_control's benchmark tasks as `domain_task`, and DrQ-v2's 24.

Pure data and lookups; importing this module does not import dm_control.
"""
import difflib
import types
from typing import Literal, Mapping

TaskGroup = Literal["easy", "medium", "hard"]

# `dm_control.suite.BENCHMARKING`, named f"{domain}_{task}", plus the quadruped tasks
# (in `suite.EXTRA`) that DrQ-v2 benchmarks, plus DrQ-v2's alias `cup_catch`.
SUITE_TASKS: Mapping[str, tuple[str, str]] = types.MappingProxyType({
    "acrobot_swingup": ("acrobot", "swingup"),
    "acrobot_swingup_sparse": ("acrobot", "swingup_sparse"),
    "ball_in_cup_catch": ("ball_in_cup", "catch"),
    "cartpole_balance": ("cartpole", "balance"),
    "cartpole_balance_sparse": ("cartpole", "balance_sparse"),
    "cartpole_swingup": ("cartpole", "swingup"),
    "cartpole_swingup_sparse": ("cartpole", "swingup_sparse"),
    "cheetah_run": ("cheetah", "run"),
    "finger_spin": ("finger", "spin"),
    "finger_turn_easy": ("finger", "turn_easy"),
    "finger_turn_hard": ("finger", "turn_hard"),
    "fish_upright": ("fish", "upright"),
    "fish_swim": ("fish", "swim"),
    "hopper_stand": ("hopper", "stand"),
    "hopper_hop": ("hopper", "hop"),
    "humanoid_stand": ("humanoid", "stand"),
    "humanoid_walk": ("humanoid", "walk"),
    "humanoid_run": ("humanoid", "run"),
    "manipulator_bring_ball": ("manipulator", "bring_ball"),
    "pendulum_swingup": ("pendulum", "swingup"),
    "point_mass_easy": ("point_mass", "easy"),
    "reacher_easy": ("reacher", "easy"),
    "reacher_hard": ("reacher", "hard"),
    "swimmer_swimmer6": ("swimmer", "swimmer6"),
    "swimmer_swimmer15": ("swimmer", "swimmer15"),
    "walker_stand": ("walker", "stand"),
    "walker_walk": ("walker", "walk"),
    "walker_run": ("walker", "run"),
    "quadruped_walk": ("quadruped", "walk"),
    "quadruped_run": ("quadruped", "run"),
    "cup_catch": ("ball_in_cup", "catch"),
})

# Tasks of `dm_control.manipulation` (not the suite), name -> environment name stem:
# loaded as f"{stem}_features" and rendered from the stem's camera ourselves, which
# gives the same physics and pixels as f"{stem}_vision" (what DrQ-v2 loads).
MANIPULATION_TASKS: Mapping[str, str] = types.MappingProxyType({
    "reach_duplo": "reach_duplo",
})

# Difficulty groups of the DrQ-v2 paper, as in the official code's
# cfgs/task/<task>.yaml (facebookresearch/drqv2: each file's `defaults` names its group).
_DRQV2_GROUPS: Mapping[str, TaskGroup] = types.MappingProxyType({
    "cartpole_balance": "easy",
    "cartpole_balance_sparse": "easy",
    "cartpole_swingup": "easy",
    "cup_catch": "easy",
    "finger_spin": "easy",
    "hopper_stand": "easy",
    "pendulum_swingup": "easy",
    "walker_stand": "easy",
    "walker_walk": "easy",
    "acrobot_swingup": "medium",
    "cartpole_swingup_sparse": "medium",
    "cheetah_run": "medium",
    "finger_turn_easy": "medium",
    "finger_turn_hard": "medium",
    "hopper_hop": "medium",
    "quadruped_run": "medium",
    "quadruped_walk": "medium",
    "reach_duplo": "medium",
    "reacher_easy": "medium",
    "reacher_hard": "medium",
    "walker_run": "medium",
    "humanoid_run": "hard",
    "humanoid_stand": "hard",
    "humanoid_walk": "hard",
})

# The 24 tasks of DrQ-v2 (arXiv 2107.09645), sorted by name.
DRQV2_TASKS: tuple[str, ...] = tuple(sorted(_DRQV2_GROUPS))


def names() -> list[str]:
    """All task names `make` accepts, sorted."""
    return sorted([*SUITE_TASKS, *MANIPULATION_TASKS])


def check_task(task: str) -> None:
    """Raises ValueError naming close matches and the valid names if `task` is unknown."""
    if isinstance(task, str) and (task in SUITE_TASKS or task in MANIPULATION_TASKS):
        return
    valid = names()
    close = difflib.get_close_matches(str(task), valid, n=3) if isinstance(task, str) else []
    hint = f"Did you mean {', '.join(close)}? " if close else ""
    raise ValueError(
        f"Unknown task {task!r}. {hint}Valid tasks (see envs.names()): {', '.join(valid)}.")


def task_group(task: str) -> TaskGroup | None:
    """DrQ-v2's difficulty group of `task` ('easy', 'medium' or 'hard'); None outside its 24."""
    return _DRQV2_GROUPS.get(task)

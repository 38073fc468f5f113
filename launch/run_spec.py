"""What one run is, and the one check of it.

    spec = RunSpec("drqv2", "walker_walk", config, seed=1, num_frames=1_000_000)
    spec = check_run_spec(spec, jax.devices())   # ValueError listing every problem

A `RunSpec` is what `launch.train`, `launch.sweep` and `launch.benchmark` run: its identity
(agent, task, seeds, num_frames and the full agent `Config`, saved as the workdir's
config.json by `identity`) and its placement (num_devices, seed_shards: not part of the
identity, a run may resume on other devices). `check_run_spec` is the only place that
checks a run before it starts: names, numbers, the config's fields, and the placement
against the devices at hand. Nothing after it checks again (the library's own entry
points, `agents.make` and `envs.make`, still refuse bad input of their callers).

This module imports no JAX: a sweep's job imports it to build a command line.
"""
import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from pixelzoo.agents.config import Config

MAX_ENV_SEED = 2**32
EVAL_SEED_OFFSET = 100_000   # evaluation environments use seed + this


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: K = num_seeds seeds seed .. seed + K - 1 of `agent` (a preset name) with
    `config` on `task` for num_frames frames (environment steps, before action repeat).

    num_devices: devices to train on (None: all); seed_shards: how the seeds split over them
    (None: `agents.learner.default_seed_shards`). `check_run_spec` resolves both.
    """

    agent: str
    task: str
    config: "Config"
    seed: int = 1
    num_seeds: int = 1
    num_frames: int = 1_000_000
    num_devices: int | None = None
    seed_shards: int | None = None

    @property
    def seeds(self) -> list[int]:
        return [self.seed + index for index in range(self.num_seeds)]

    def identity(self) -> dict[str, Any]:
        """The run's config.json: everything but the placement."""
        return {"agent": self.agent, "task": self.task, "seed": self.seed,
                "num_seeds": self.num_seeds, "num_frames": self.num_frames,
                "config": self.config.to_dict()}

    @classmethod
    def from_identity(cls, identity: Mapping[str, Any], num_devices: int | None = None,
                      seed_shards: int | None = None) -> "RunSpec":
        """The RunSpec of a config.json dict (num_seeds 1 when it has none)."""
        from pixelzoo.agents.config import Config
        return cls(identity["agent"], identity["task"], Config.from_dict(identity["config"]),
                   identity["seed"], identity.get("num_seeds", 1), identity["num_frames"],
                   num_devices, seed_shards)


def compose_run_spec(agent: str, task: str, overrides: Mapping[str, Any], **fields: Any
                     ) -> RunSpec:
    """The RunSpec of `agent`'s preset on `task` with config `overrides` (its per-task recipe
    first), unchecked: an unknown agent or task adds no preset or recipe, and
    `check_run_spec` reports it with every other problem. fields: RunSpec's other fields."""
    from pixelzoo import envs
    from pixelzoo.agents.config import compose_config
    known_task = task in envs.names()
    config = compose_config(agent, task if known_task else None,
                            envs.task_group(task) if known_task else None, **overrides)
    return RunSpec(agent, task, config, **fields)


def check_run_spec(spec: RunSpec, devices: Sequence[Any] | None = None,
                   num_processes: int = 1) -> RunSpec:
    """`spec` with its placement resolved on `devices` (every process's, e.g. jax.devices();
    None: placement left unchecked, as a sweep's jobs run elsewhere) and num_processes.

    Raises one ValueError listing every problem: unknown agent or task, bad numbers, the
    config's problems (`agents.config.validate`), a placement the devices do not allow, and
    what multi-process runs do not support yet."""
    problems, config_problems = _identity_problems(spec)
    config_ok = not config_problems
    problems += config_problems
    if config_ok and num_processes > 1 and (spec.config.replay == "device"
                                            or spec.config.seer_freeze_frames):
        problems.append("replay='device' and SEER run in one process for now; use "
                        "replay='host' and seer_freeze_frames=0 for multi-process runs")
    if devices is not None:
        placement, placement_problems = _placement(spec, len(devices), devices[0].platform,
                                                   config_ok)
        problems += placement_problems
        spec = dataclasses.replace(spec, **placement)
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
    return spec


def _identity_problems(spec: RunSpec) -> tuple[list[str], list[str]]:
    """(problems of the names and numbers, problems of the config)."""
    from pixelzoo import agents
    from pixelzoo.agents.config import validate
    from pixelzoo.envs.tasks import check_task
    problems = []
    if spec.agent not in agents.names():
        problems.append(f"unknown agent {spec.agent!r}; choose one of: "
                        f"{', '.join(agents.names())}")
    try:
        check_task(spec.task)
    except ValueError as error:
        problems.append(str(error))     # names the task, the closest ones and every valid one
    if spec.num_frames <= 0:
        problems.append(f"--num_frames={spec.num_frames} must be > 0")
    if spec.num_seeds < 1:
        problems.append(f"--num_seeds={spec.num_seeds} must be >= 1")
    highest = MAX_ENV_SEED - EVAL_SEED_OFFSET - max(spec.num_seeds, 1)
    if not 0 <= spec.seed <= highest:
        problems.append(f"--seed={spec.seed} must be in [0, {highest}] (every environment "
                        f"seed, evaluation's seed + {EVAL_SEED_OFFSET} included, is below 2**32)")
    return problems, validate(spec.config)


def _placement(spec: RunSpec, available: int, platform: str,
               config_ok: bool) -> tuple[dict[str, int], list[str]]:
    """({num_devices, seed_shards} resolved, problems) of spec's placement on `available`
    devices: a count in range, seed shards dividing both counts, a batch each seed's
    devices can share."""
    from pixelzoo.agents.learner import (batch_split_problem, default_seed_shards,
                                         seed_shard_choices)
    count = available if spec.num_devices is None else spec.num_devices
    if not 1 <= count <= available:
        return {}, [f"--num_devices={count}: allowed range 1..{available} ({available} "
                    f"{platform} devices here)"]
    if spec.num_seeds < 1:
        return {}, []
    choices = seed_shard_choices(spec.num_seeds, count)
    try:
        shards = (default_seed_shards(spec.num_seeds, count) if spec.seed_shards is None
                  else spec.seed_shards)
    except ValueError as error:
        return {}, [str(error)]
    if shards not in choices:
        return {}, [f"--seed_shards={shards} must divide both --num_seeds={spec.num_seeds} "
                    f"and --num_devices={count}; valid: {choices}"]
    problem = config_ok and batch_split_problem(spec.config.batch_size, count // shards)
    if problem:
        return {}, [f"{problem} (each seed's devices: --num_devices={count} / "
                    f"--seed_shards={shards})"]
    return {"num_devices": count, "seed_shards": shards}, []

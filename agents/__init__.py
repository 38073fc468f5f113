"""pixelzoo agents: configs, presets, learners and the registry.

    agent = agents.make("drqv2", env.observation_spec(), env.action_spec(), lr=1e-4)
    state = agent.init(jax.random.key(0))
"""
from typing import Any

from dm_env import specs

import functools

from pixelzoo.agents import actors, critics, ddpg, sac, seer  # actors, critics: register kinds
from pixelzoo.agents import rmc  # registers the rmc actor kind (SSPG)
from pixelzoo.agents import routine_update  # registers the routine actor kind (Routines)
from pixelzoo.agents.common import (Agent, AgentState, UpdateSetup, act, act_and_update,
                                    after_uniform_action, init_state, make_setup,
                                    reset_acting)
from pixelzoo.agents.config import FIELD_NAMES, PRESETS, Config, build_config, task_overrides, validate
from pixelzoo.agents.learner import Learner, fuse_updates, make_mesh, make_seed_mesh
from pixelzoo.agents.parts import (ActorKind, CriticKind, CriticStepResult, register_actor,
                                   register_critic, register_encoder)

# Base algorithm -> its update(setup, state, batch, key).
BASES = {"ddpg": ddpg.update, "sac": sac.update}


def names() -> list[str]:
    """Names of the agent presets."""
    return list(PRESETS)


def make(name: str, obs_spec: specs.Array, action_spec: specs.BoundedArray,
         task: str | None = None, task_group: str | None = None,
         **overrides: Any) -> Agent:
    """Builds preset `name` with any config field overridden by keyword.

    task / task_group: when given, the preset's per-task recipe changes apply first (e.g.
    walker: batch 512 and n-step 1 for DrQ-v2), then `overrides`. Raises ValueError for an
    unknown name or field, or an invalid value, listing the valid choices.
    """
    config = build_config(name, task=task, task_group=task_group, **overrides)
    return make_from_config(name, config, obs_spec, action_spec)


def make_from_config(name: str, config: Config, obs_spec: specs.Array,
                     action_spec: specs.BoundedArray) -> Agent:
    """Builds an agent from a complete, validated `Config`."""
    errors = validate(config)
    if errors:
        raise ValueError("invalid config: " + "; ".join(errors))
    if len(action_spec.shape) != 1:
        raise ValueError(f"action_spec must be a vector [A], got shape {action_spec.shape}")
    setup = make_setup(config, obs_spec, int(action_spec.shape[0]))
    update = setup.nets.actor_kind.update or BASES[config.base]
    kind = setup.nets.actor_kind
    stateful = kind.act_and_update is not None
    update_size = kind.update_size(config) if kind.update_size else None
    resize = None if update_size is None else (lambda size: make_from_config(
        name, kind.sized_config(config, size), obs_spec, action_spec))
    return Agent(name=name, config=config, obs_spec=obs_spec, action_spec=action_spec,
                 init=functools.partial(init_state, setup), act=functools.partial(act, setup),
                 update=functools.partial(update, setup),
                 seer=seer.seer_parts(setup, update),
                 act_and_update=functools.partial(act_and_update, setup) if stateful else None,
                 after_uniform_action=functools.partial(after_uniform_action, setup),
                 reset_acting=(functools.partial(reset_acting, setup)
                               if kind.reset_acting else None),
                 update_size=update_size, resize=resize)


__all__ = ["ActorKind", "Agent", "AgentState", "BASES", "Config", "CriticKind", "CriticStepResult",
           "UpdateSetup", "register_actor", "register_critic", "register_encoder", "FIELD_NAMES", "Learner", "PRESETS", "build_config",
           "fuse_updates", "make", "make_from_config", "make_mesh", "make_seed_mesh", "names", "task_overrides",
           "validate"]

"""The steps an update is made of, shared by the bases (agents/ddpg.py, agents/sac.py).

Each is a pure function over explicit arguments that returns new values (parameters,
optimiser states, metrics) and changes none of its arguments. The base-specific critic and
actor steps are in the base modules; these are the ones any base may take:
`lix_step`, `pessimism_step`, `temperature_step`, `redraw_step`, `target_step`, and
`next_state` (how every update ends: `redraw_step`, then `target_step`).
"""
import functools

import jax
import jax.numpy as jnp
import optax

from pixelzoo.agents import losses
from pixelzoo.agents.common import Metrics, UpdateSetup, agent_step, apply_optimizer, polyak
from pixelzoo.agents.config import Config
from pixelzoo.agents.parts import CriticKind, ValueFn
from pixelzoo.agents.seer import FROZEN, frozen_labels
from pixelzoo.networks import LixContext
from pixelzoo.networks.attention import RANDOM_FEATURES, redraw_projections

sg = jax.lax.stop_gradient


def lix_contexts(setup: UpdateSetup, params: dict,
                 key: jax.Array) -> tuple[LixContext | None, LixContext | None]:
    """A-LIX's (obs, next_obs) contexts: shifts up to lix_max_shift * sg(P) pixels; the obs
    pass also probes ND for P's dual gradient. (None, None) without LIX, or once SEER has
    frozen the encoder."""
    config = setup.config
    if not config.lix or setup.frozen:
        return None, None
    max_shift = config.lix_max_shift * sg(params["lix_p"])
    key_obs, key_next = jax.random.split(key)
    return (LixContext(max_shift, key_obs, nd_target=config.lix_nd_target),
            LixContext(max_shift, key_next))


def lix_step(setup: UpdateSetup, p: jnp.ndarray, opt_state, nd_gradient: jnp.ndarray | None
             ) -> tuple[jnp.ndarray, object, Metrics]:
    """A-LIX's step on P with the dual gradient nd_target - ND from the critic step
    (`losses.lix_p_update`). After SEER's freeze P no longer learns (no gradient reaches
    the encoder): unchanged, reported without ND. Returns (P, opt_state, metrics)."""
    config = setup.config
    if setup.frozen:
        return p, opt_state, {"lix_p": p, "lix_max_shift": config.lix_max_shift * p}
    new_p, opt_state = losses.lix_p_update(setup.optimizers.lix_p, p, opt_state, nd_gradient)
    return new_p, opt_state, {"lix_p": new_p, "lix_max_shift": config.lix_max_shift * sg(p),
                              "lix_nd": config.lix_nd_target - nd_gradient}


def pessimism_step(config: Config, critic_kind: CriticKind, params: dict, opt_states: dict,
                   q: jnp.ndarray, target: jnp.ndarray, update_step: jnp.ndarray,
                   ) -> tuple[dict, dict, ValueFn, Metrics]:
    """The critic kind's step after the critic step (GPL: beta's dual step), on the critics'
    Q [N, B] before their update and the target [B]. Returns (params, opt_states with the
    kind's scalars updated, the actor's value function, metrics)."""
    if critic_kind.step is None:
        return params, opt_states, critic_kind.value_fn(config, params), {}
    result = critic_kind.step(config, params, opt_states, q, target,
                              agent_step(config, update_step))
    return ({**params, **result.params}, {**opt_states, **result.opt_states},
            result.actor_value_fn, result.metrics)


def temperature_step(optimizer: optax.GradientTransformation, log_alpha: jnp.ndarray,
                     opt_state, log_prob: jnp.ndarray, target_entropy: float,
                     ) -> tuple[jnp.ndarray, object, Metrics]:
    """SAC's temperature step on `losses.temperature_loss` with the actor step's log pi
    [B]. Returns (log_alpha, opt_state, {'alpha_loss'})."""
    loss, grad = jax.value_and_grad(losses.temperature_loss)(log_alpha, log_prob,
                                                            target_entropy)
    log_alpha, opt_state = apply_optimizer(optimizer, grad, opt_state, log_alpha)
    return log_alpha, opt_state, {"alpha_loss": loss}


# Salt of the key `redraw_step` folds out of an update's key (the update's own splits stay
# as they were).
REDRAW_SALT = 19


def redraw_step(setup: UpdateSetup, params: dict, key: jax.Array) -> dict:
    """encoder='attention' with ia_redraw='every_update': params with the encoder's random
    projections drawn afresh from the update's key (the next update uses them); else (and
    once SEER has frozen the encoder) params unchanged."""
    config = setup.config
    if config.encoder != "attention" or config.ia_redraw != "every_update" or setup.frozen \
            or RANDOM_FEATURES not in params["encoder"]:
        return params
    encoder = redraw_projections(params["encoder"], jax.random.fold_in(key, REDRAW_SALT),
                                 config.ia_orthogonal)
    return {**params, "encoder": encoder}


def next_state(setup: UpdateSetup, state, params: dict, opt_states: dict, key: jax.Array,
               **changes):
    """The AgentState an update ends with, for every update kind: the encoder's random
    projections redrawn where configured (`redraw_step`), the targets moved towards the
    result (`target_step`) and the update count advanced; `changes` (SSPG's and Routines'
    acting state) replace further fields."""
    params = redraw_step(setup, params, key)
    return state.replace(
        params=params, opt_states=opt_states, update_step=state.update_step + 1,
        target_params=target_step(setup.config, state.update_step, state.target_params,
                                  params, setup.frozen), **changes)


def _copy_constants(target: dict, online: dict) -> dict:
    """The target encoder's random projections (a flax 'random_features' collection) are the
    online ones on every update: copied, never averaged ((1 - tau) x + tau x is x only up to
    rounding, and a redrawn projection must reach the target at once)."""
    encoder = target.get("encoder")
    if not isinstance(encoder, dict) or RANDOM_FEATURES not in encoder:
        return target
    return {**target, "encoder": {**encoder,
                                  RANDOM_FEATURES: online["encoder"][RANDOM_FEATURES]}}


def target_step(config: Config, update_step: jnp.ndarray, target_params: dict, params: dict,
                frozen: bool = False) -> dict:
    """Each group of target_params Polyak-averaged towards params[group] with rate tau on
    the updates where update_step % target_update_every == 0, unchanged on the others.
    frozen (after SEER's freeze): the frozen leaves are not averaged. An attention
    encoder's random projections are copied (`_copy_constants`)."""
    online = {group: params[group] for group in target_params}
    return _copy_constants(_averaged_targets(config, update_step, target_params, online,
                                             frozen), online)


def _averaged_targets(config: Config, update_step: jnp.ndarray, target_params: dict,
                      online: dict, frozen: bool) -> dict:
    """target_params averaged towards online (the frozen leaves kept) where the update is a
    target update, else target_params."""
    def average() -> dict:
        if not frozen:
            return polyak(target_params, online, config.tau)
        average_leaf = functools.partial(polyak, tau=config.tau)
        return jax.tree.map(lambda old, new, label: old if label == FROZEN
                            else average_leaf(old, new),
                            target_params, online, frozen_labels(target_params))

    return jax.lax.cond(update_step % config.target_update_every == 0, average,
                        lambda: target_params)

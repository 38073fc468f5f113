"""SEER (stored embeddings; docs/algorithms.md, SEER) for every base.

After the freeze the base's one update runs on another setup (`latent_setup`):
- a batch becomes features by picking stored copies of latents instead of shifting pixels
  (`pick_copies`), and the parts read the latents as they are (`StoredLatents`, `HeadOf`);
- the encoder and both trunks are frozen by the optimisers: optax.multi_transform sends
  their leaves to set_to_zero (`frozen_optimizer`), and the target step skips them.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from dm_env import specs

from pixelzoo.agents import common
from pixelzoo.agents.augment import random_shift
from pixelzoo.agents.config import Config
from pixelzoo.agents.parts import Parts

FROZEN, TRAINABLE = "frozen", "trainable"


def num_copies(config: Config) -> int:
    """Stored copies per observation: seer_num_copies shifted ones, one without shifts."""
    return config.seer_num_copies if config.aug == "shift" else 1


def latent_spec(config: Config) -> specs.Array:
    """One stored observation: float32 [m copies, 2F], the critic's z then the actor's."""
    return specs.Array((num_copies(config), 2 * config.feature_dim), np.float32, "latents")


def encode_latents(nets: Parts, config: Config, obs_spec: specs.Array,
                   state: common.AgentState, obs: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """obs [B, ...] -> [B, m, 2F]: m independently shifted copies through the frozen encoder
    (LIX layers off, as when acting) and both trunks."""
    common.check_obs(obs, obs_spec)
    copies = num_copies(config)
    tiled = jnp.concatenate([obs] * copies, axis=0)                      # [m * B, ...]
    if config.aug == "shift":
        tiled = random_shift(tiled, key)
    features = nets.encoder.apply(state.params["encoder"], tiled)
    z = jnp.concatenate([nets.critic.apply(state.params["critic"], features, method="trunk"),
                         nets.actor.apply(state.params["actor"], features, method="trunk")],
                        axis=-1)
    return jnp.swapaxes(z.reshape(copies, obs.shape[0], -1), 0, 1)


def pick_copies(latents: jnp.ndarray, key: jax.Array, count: int = 1) -> jnp.ndarray:
    """[B, m, 2F] -> [count * B, 2F] (copy-major): `count` stored copies per observation,
    each picked uniformly at random."""
    batch = latents.shape[0]
    index = jax.random.randint(key, (count, batch), 0, latents.shape[1])
    return latents[jnp.arange(batch)[None], index].reshape(count * batch, -1)


class StoredLatents:
    """The encoder after the freeze: stored latents [B, 2F] are the features as they are."""

    def apply(self, params, latents: jnp.ndarray, lix_context=None) -> jnp.ndarray:
        return latents


@dataclasses.dataclass(frozen=True)
class HeadOf:
    """An actor or critic module applied to its slice [start, stop) of stored latents
    [B, 2F], through its head only (its trunk's output is what was stored). Its other
    methods (a routine actor's 'decode' and 'encode', which read no features) and its
    attributes (`stochastic`) are the module's own."""

    module: object
    start: int
    stop: int

    def apply(self, params, inputs: jnp.ndarray, *args, method: str | None = None):
        """method None: the head on the slice of latents `inputs`; 'trunk': the slice itself
        (what the trunk gave when stored); 'head': the head on a trunk output given as it
        is; any other method name: the module's method on `inputs` as they are."""
        if method == "trunk":
            return inputs[:, self.start:self.stop]
        if method is None:
            return self.module.apply(params, inputs[:, self.start:self.stop], *args,
                                     method="head")
        if not isinstance(method, str):
            raise TypeError(f"HeadOf takes method names (strings), got {method!r}")
        return self.module.apply(params, inputs, *args, method=method)

    def __getattr__(self, name: str):
        if name == "module":         # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.module, name)


def frozen_labels(params: dict) -> dict:
    """FROZEN or TRAINABLE for each leaf of a dict of parameter groups (or of one actor or
    critic tree): the encoder and every Trunk_0 freeze, the rest trains."""
    def label(path, _):
        names = [getattr(entry, "key", None) for entry in path]
        return FROZEN if names[0] == "encoder" or "Trunk_0" in names else TRAINABLE
    return jax.tree_util.tree_map_with_path(label, params)


def frozen_optimizer(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """`optimizer` on the trainable leaves, set_to_zero on the frozen ones."""
    return optax.multi_transform({TRAINABLE: optimizer, FROZEN: optax.set_to_zero()},
                                 frozen_labels)


def frozen_optimizer_state(optimizer: optax.GradientTransformation, full_state, params):
    """The state of `frozen_optimizer(optimizer)` continuing `full_state` (the state of
    `optimizer` over all of `params`): the trainable leaves keep their moments and count."""
    template = frozen_optimizer(optimizer).init(params)
    labels, params_def = frozen_labels(params), jax.tree.structure(params)
    is_params_like = lambda node: jax.tree.structure(node) == params_def

    def trainable_only(node):
        if not is_params_like(node):
            return node
        return jax.tree.map(lambda x, label: x if label == TRAINABLE else optax.MaskedNode(),
                            node, labels)

    inner = jax.tree.map(trainable_only, full_state, is_leaf=is_params_like)
    state = template._replace(inner_states={**template.inner_states,
                                            TRAINABLE: optax.MaskedState(inner_state=inner)})
    assert jax.tree.structure(state) == jax.tree.structure(template)
    return state


def frozen_optimizer_states(setup: common.UpdateSetup,
                            state: common.AgentState) -> common.AgentState:
    """`state` with its 'critic' and 'actor' optimiser states converted for the frozen
    optimisers (nothing else changes)."""
    critic_group = {"encoder": state.params["encoder"], "critic": state.params["critic"]}
    optimizers = setup.optimizers
    opt_states = {**state.opt_states,
                  "critic": frozen_optimizer_state(optimizers.critic,
                                                   state.opt_states["critic"], critic_group),
                  "actor": frozen_optimizer_state(optimizers.actor, state.opt_states["actor"],
                                                  state.params["actor"])}
    return state.replace(opt_states=opt_states)


def freeze(setup: common.UpdateSetup, state: common.AgentState) -> common.AgentState:
    """The freeze: the target networks become the online ones (a soft update with tau 1;
    the critic, and the encoder copy where the base keeps one), and the optimiser states
    become the frozen optimisers'."""
    state = state.replace(target_params={group: state.params[group]
                                         for group in state.target_params})
    return frozen_optimizer_states(setup, state)


def latent_setup(setup: common.UpdateSetup) -> common.UpdateSetup:
    """The pixel update's setup after the freeze: stored latents for inputs, heads only,
    frozen optimisers."""
    config, nets, feature = setup.config, setup.nets, setup.config.feature_dim
    latent_nets = dataclasses.replace(nets, encoder=StoredLatents(),
                                      critic=HeadOf(nets.critic, 0, feature),
                                      actor=HeadOf(nets.actor, feature, 2 * feature))
    optimizers = dataclasses.replace(setup.optimizers,
                                     critic=frozen_optimizer(setup.optimizers.critic),
                                     actor=frozen_optimizer(setup.optimizers.actor))
    return dataclasses.replace(setup, nets=latent_nets, optimizers=optimizers,
                               obs_spec=latent_spec(config), augment=pick_copies, frozen=True)


def seer_parts(setup: common.UpdateSetup, update) -> common.SeerParts:
    """What the launcher needs of SEER, for a base whose update is `update(setup, ...)`."""
    return common.SeerParts(
        latent_spec=latent_spec(setup.config),
        encode_latents=functools.partial(encode_latents, setup.nets, setup.config,
                                         setup.obs_spec),
        freeze=functools.partial(freeze, setup),
        update_latent=functools.partial(update, latent_setup(setup)),
        frozen_optimizer_states=functools.partial(frozen_optimizer_states, setup))

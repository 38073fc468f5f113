"""SEER's pieces that every base shares (docs/algorithms.md, SEER): the stored latents of an
observation, the freeze, and keeping the frozen parameters as they were. Each base builds
its heads-only update (`update_latent`) from these and its own losses."""
import jax
import jax.numpy as jnp
import numpy as np
from dm_env import specs

from pixelzoo.agents import common
from pixelzoo.agents.augment import random_shift
from pixelzoo.agents.config import Config


def num_copies(config: Config) -> int:
    """Stored copies per observation: seer_num_copies shifted ones, one without shifts."""
    return config.seer_num_copies if config.aug == "shift" else 1


def latent_spec(config: Config) -> specs.Array:
    """One stored observation: float32 [m copies, 2F], the critic's z then the actor's."""
    return specs.Array((num_copies(config), 2 * config.feature_dim), np.float32, "latents")


def encode_latents(nets, config: Config, obs_spec: specs.Array, state: common.AgentState,
                   obs: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
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


def freeze(state: common.AgentState) -> common.AgentState:
    """The target networks become the online ones (a soft update with tau 1): the critic,
    and the encoder copy where the base keeps one."""
    return state.replace(target_params={group: state.params[group]
                                        for group in state.target_params})


def keep_frozen(new: dict, old: dict) -> dict:
    """Parameter groups `new` with the frozen parts (encoder; the actor's and the critic's
    Trunk_0) taken from `old`: they stay bit-identical whatever the optimiser did."""
    new = dict(new)
    for group in ("actor", "critic"):
        if group in new:
            new[group] = {**new[group], "params": {**new[group]["params"],
                                                   "Trunk_0": old[group]["params"]["Trunk_0"]}}
    if "encoder" in new:
        new["encoder"] = old["encoder"]
    return new


def pick_copies(latents: jnp.ndarray, key: jax.Array, count: int = 1) -> jnp.ndarray:
    """[B, m, 2F] -> [count * B, 2F] (copy-major): `count` stored copies per observation,
    each picked uniformly at random."""
    batch = latents.shape[0]
    index = jax.random.randint(key, (count, batch), 0, latents.shape[1])
    return latents[jnp.arange(batch)[None], index].reshape(count * batch, -1)

"""Random-shift augmentation (docs/algorithms.md, "Shared pixel pipeline"): the one implementation."""
import jax
import jax.numpy as jnp


def random_shift(obs: jnp.ndarray, key: jax.Array, pad: int = 4) -> jnp.ndarray:
    """Pad by edge replication, then crop back at an independent integer offset per sample.

    obs: [B, H, W, C] (any dtype, uint8 pixels in practice) -> [B, H, W, C], same dtype.
    Offsets (dy, dx) are uniform in [0, 2 * pad]^2. DrQ-v2's bilinear grid sample lands on
    pixel centres, so this integer crop computes exactly the same values.
    """
    batch, height, width, channels = obs.shape
    padded = jnp.pad(obs, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = jax.random.randint(key, (batch, 2), 0, 2 * pad + 1)

    def crop(image: jnp.ndarray, offset: jnp.ndarray) -> jnp.ndarray:
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                     (height, width, channels))

    return jax.vmap(crop)(padded, offsets)


def augment_copies(obs: jnp.ndarray, key: jax.Array, copies: int,
                   enabled: bool = True) -> jnp.ndarray:
    """`copies` independently shifted copies of obs [B, ...] stacked copy-major as
    [copies * B, ...] (unshifted copies when not `enabled`)."""
    tiled = jnp.concatenate([obs] * copies, axis=0)
    return random_shift(tiled, key) if enabled else tiled

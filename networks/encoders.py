"""Pixel encoders: the 4-layer conv encoder of DrQ / DrQ-v2 (ALGORITHMS.md section 0)."""
import flax.linen as nn
import jax.numpy as jnp

from networks.init import bias_init, conv_kernel_init

NUM_CONV_LAYERS = 4
CONV_CHANNELS = 32


def conv_output_size(image_size: int) -> int:
    """Spatial size after the encoder: 3x3 stride 2, then three 3x3 stride 1, VALID."""
    size = (image_size - 3) // 2 + 1
    return size - 2 * (NUM_CONV_LAYERS - 1)


def min_image_size() -> int:
    """Smallest image the conv encoder accepts (its output must be at least 1x1)."""
    size = 3
    while conv_output_size(size) < 1:
        size += 1
    return size


def normalize_pixels(obs: jnp.ndarray, centered: bool) -> jnp.ndarray:
    """uint8 pixels -> float32: obs / 255 - 0.5 (DrQ-v2) or obs / 255 (DrQ)."""
    x = obs.astype(jnp.float32) / 255.0
    return x - 0.5 if centered else x


class ConvEncoder(nn.Module):
    """uint8 [B, H, W, C] -> float32 feature maps [B, H', W', 32] (H' = conv_output_size(H)).

    `flatten=True` (default) returns [B, 32 * H' * W'] (39200 at 84px).
    """

    centered: bool = True
    flatten: bool = True

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = normalize_pixels(obs, self.centered)
        for layer in range(NUM_CONV_LAYERS):
            stride = 2 if layer == 0 else 1
            x = nn.Conv(CONV_CHANNELS, (3, 3), strides=(stride, stride), padding="VALID",
                        kernel_init=conv_kernel_init, bias_init=bias_init)(x)
            x = nn.relu(x)
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        return x


class StateEncoder(nn.Module):
    """Proprioceptive states pass through unchanged: float32 [B, D] -> [B, D]."""

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        return obs.astype(jnp.float32)

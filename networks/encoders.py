"""Pixel encoders: the 4-layer conv encoder of DrQ / DrQ-v2 (ALGORITHMS.md section 0) and
Flare's latent-flow encoder (section 5)."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.init import bias_init, conv_kernel_init
from networks.lix import lix, nd_probe


@dataclasses.dataclass(frozen=True)
class LixContext:
    """A-LIX in a training pass: LIX layers shift by up to `max_shift` pixels (keys from
    `key`); with `nd_param` set, the last LIX output passes through `nd_probe`, giving
    nd_param the gradient nd_target - ND(dL/dz)."""

    max_shift: jnp.ndarray
    key: jax.Array
    nd_param: jnp.ndarray | None = None
    nd_target: float = 0.0

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


def patch_conv(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides, padding,
               lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
               feature_group_count: int = 1, precision=None) -> jnp.ndarray:
    """A VALID NHWC convolution as one matrix product over image patches (im2col).

    lhs: [B, H, W, Cin], rhs (HWIO kernel): [kh, kw, Cin, Cout] -> [B, H', W', Cout].
    Same signature and values as `jax.lax.conv_general_dilated` for what the encoders use
    (VALID padding, no dilation, one group). XLA:CPU runs its convolutions on one core but
    its matrix products on all of them, so on CPU this is about twice as fast, forward and
    backward for the encoder's large convolutions; small ones, and every convolution on
    GPU and TPU, use the native one (see `_conv_for_backend`).
    """
    del dimension_numbers  # flax passes NHWC / HWIO, the only layout used here
    valid = padding == "VALID" or all(tuple(pad) == (0, 0) for pad in padding)
    if not valid or feature_group_count != 1 or any(
            d not in (None, 1) for dims in (lhs_dilation, rhs_dilation) for d in (dims or ())):
        raise ValueError("patch_conv supports VALID padding, no dilation and one group")
    kh, kw, cin, cout = rhs.shape
    sy, sx = window_strides
    out_h = (lhs.shape[1] - kh) // sy + 1
    out_w = (lhs.shape[2] - kw) // sx + 1
    patches = jnp.concatenate(
        [lhs[:, i:i + sy * (out_h - 1) + 1:sy, j:j + sx * (out_w - 1) + 1:sx, :]
         for i in range(kh) for j in range(kw)], axis=-1)     # [B, H', W', kh * kw * Cin]
    return jnp.einsum("bhwk,ko->bhwo", patches, rhs.reshape(kh * kw * cin, cout),
                      precision=precision)


# Below this many output positions (batch x height x width) a convolution is too small for
# the patch product to pay off, and XLA's native convolution compiles faster.
PATCH_CONV_MIN_POSITIONS = 4096


def _conv_for_backend(lhs, rhs, window_strides, padding, **kwargs) -> jnp.ndarray:
    """`patch_conv` for large convolutions on CPU, XLA's native convolution otherwise
    (chosen at trace time from the backend and the static shapes)."""
    out_h = (lhs.shape[1] - rhs.shape[0]) // window_strides[0] + 1
    out_w = (lhs.shape[2] - rhs.shape[1]) // window_strides[1] + 1
    if (jax.default_backend() == "cpu"
            and lhs.shape[0] * out_h * out_w >= PATCH_CONV_MIN_POSITIONS):
        return patch_conv(lhs, rhs, window_strides, padding, **kwargs)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


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
    def __call__(self, obs: jnp.ndarray, lix_context: LixContext | None = None) -> jnp.ndarray:
        """lix_context: None for evaluation and acting (LIX is the identity there)."""
        x = normalize_pixels(obs, self.centered)
        for layer in range(NUM_CONV_LAYERS):
            stride = 2 if layer == 0 else 1
            x = nn.Conv(CONV_CHANNELS, (3, 3), strides=(stride, stride), padding="VALID",
                        kernel_init=conv_kernel_init, bias_init=bias_init,
                        conv_general_dilated=_conv_for_backend)(x)
            x = nn.relu(x)
            if lix_context is not None:
                x = lix(x, lix_context.max_shift, jax.random.fold_in(lix_context.key, layer),
                        training=True)
        if lix_context is not None and lix_context.nd_param is not None:
            x = nd_probe(x, lix_context.nd_param, lix_context.nd_target)
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        return x


class StateEncoder(nn.Module):
    """Proprioceptive states pass through unchanged: float32 [B, D] -> [B, D]."""

    @nn.compact
    def __call__(self, obs: jnp.ndarray, lix_context: LixContext | None = None) -> jnp.ndarray:
        return obs.astype(jnp.float32)


FRAME_CHANNELS = 3


class FlareEncoder(nn.Module):
    """Flare latent flow: uint8 [B, H, W, 3T] -> [B, (T-1) * H' * W' * 64].

    Each of the T stacked frames is encoded by one shared conv encoder; at the feature-map
    level cur = maps of frames 2..T and flow = cur - stop_gradient(maps of frames 1..T-1),
    concatenated on channels (the oldest frame's own map is dropped), then flattened.
    """

    centered: bool = True

    @nn.compact
    def __call__(self, obs: jnp.ndarray, lix_context: LixContext | None = None) -> jnp.ndarray:
        batch, height, width, channels = obs.shape
        num_frames = channels // FRAME_CHANNELS
        frames = obs.reshape(batch, height, width, num_frames, FRAME_CHANNELS)
        frames = frames.transpose(0, 3, 1, 2, 4).reshape(batch * num_frames, height, width,
                                                          FRAME_CHANNELS)
        maps = ConvEncoder(centered=self.centered, flatten=False)(frames, lix_context)
        maps = maps.reshape(batch, num_frames, *maps.shape[1:])      # [B, T, H', W', 32]
        current = maps[:, 1:]
        flow = current - jax.lax.stop_gradient(maps[:, :-1])
        fused = jnp.concatenate([current, flow], axis=-1)             # [B, T-1, H', W', 64]
        return fused.reshape(batch, -1)

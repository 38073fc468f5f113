"""A-LIX (docs/algorithms.md, A-LIX): the LIX layer and the normalized-discontinuity probe.

Pure JAX functions; the encoder wires them in. Layout is NHWC throughout.

- `bilinear_shift` / `lix`: shift a feature map by a continuous (dy, dx), bilinearly, borders
  edge-replicated. Training draws one (dy, dx) ~ U[-S, S]^2 per call for the whole batch.
- `normalized_discontinuity`: ND of a gradient map (batch mean first, 8 edge-padded neighbours).
- `nd_probe`: identity on the features whose backward pass hands the learned scalar P the
  gradient nd_target - ND(dL/dfeatures).
"""
from typing import Optional

import jax
import jax.numpy as jnp

ND_EPS = 1e-20
# The 8 neighbours of a position in a 3x3 window, as (row, column) offsets.
NEIGHBOUR_OFFSETS = tuple((di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0))


def _shift_axis(x: jnp.ndarray, shift: jnp.ndarray, axis: int) -> jnp.ndarray:
    """Linear interpolation of x at index + shift along `axis`, indices clamped to the edges.

    Two integer-shifted copies: (1 - t) * x[clip(i + k)] + t * x[clip(i + k + 1)], with
    k = floor(shift), t = shift - k in [0, 1]. Clamping the two integer indices is the same as
    clamping the continuous position (both corners then land on the same edge pixel).
    """
    size = x.shape[axis]
    shift = jnp.clip(shift, -size, size)  # beyond this every position clamps; keeps int32 safe
    whole = jnp.floor(shift)
    frac = (shift - whole).astype(x.dtype)
    index = jnp.arange(size) + whole.astype(jnp.int32)
    low = jnp.take(x, jnp.clip(index, 0, size - 1), axis=axis, mode="clip")
    high = jnp.take(x, jnp.clip(index + 1, 0, size - 1), axis=axis, mode="clip")
    # At t == 0 this is 1 * low + 0 * high == low exactly (for finite x).
    return (1 - frac) * low + frac * high


def bilinear_shift(x: jnp.ndarray, shift: jnp.ndarray) -> jnp.ndarray:
    """x float [B, H, W, C], shift [2] = (dy, dx) pixels -> [B, H, W, C].

    out[b, i, j, c] = x bilinearly sampled at (i + dy, j + dx), the position clamped to
    [0, H-1] x [0, W-1] (edge replication). Separable: a row pass then a column pass, each a
    weighted sum of two integer-shifted copies. Integer shifts give an exact edge-padded crop,
    zero shift the exact identity. Differentiable in x; `shift` is under stop_gradient.
    """
    shift = jax.lax.stop_gradient(jnp.asarray(shift))
    x = _shift_axis(x, shift[0], axis=1)
    return _shift_axis(x, shift[1], axis=2)


def lix(x: jnp.ndarray, max_shift: jnp.ndarray, key: Optional[jax.Array], training: bool) -> jnp.ndarray:
    """LIX layer: x float [B, H, W, C] -> [B, H, W, C].

    training: one (dy, dx) ~ U[-max_shift, max_shift)^2 for the whole batch and all channels,
    then `bilinear_shift`. max_shift (pixels, may be traced) is 2.5 * stop_gradient(P) in
    A-LIX; max_shift == 0 gives exactly x. training=False: identity (key unused, may be None).
    """
    if not training:
        return x
    unit = jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0)
    return bilinear_shift(x, unit * max_shift)


def normalized_discontinuity(g: jnp.ndarray, eps: float = ND_EPS) -> jnp.ndarray:
    """g float [B, H, W, C] (dL/d last LIX output) -> scalar ND.

    centre = mean_b g  [H, W, C]; over the 8 neighbours of each (h, w) in the edge-padded map,
    per channel: signal = mean n^2, noise = mean (n - centre)^2;
    ND = mean over (H, W, C) of log(1 + noise / (signal + eps)).

    As in the released code (analysis_custom_autograd_functions.py, LearnS.backward, with
    analysis_utils.py and cfgs/algo/ALIX.yaml: N=3, target 0.535, eps 1e-20): the batch mean
    comes first (dy.mean(0)), the 3x3 patches are taken per channel from a replicate-padded map,
    signal = (sum of the 9 patch squares - centre^2) / 8 and noise = sum of the 9 squared
    differences / 8 (the centre's term is 0), i.e. 8-neighbour means, and the final `.mean()`
    runs over all of [1, C, H, W], channels included. Scale-invariant up to eps.
    """
    g = g.astype(jnp.promote_types(g.dtype, jnp.float32))
    centre = jnp.mean(g, axis=0)
    height, width = centre.shape[:2]
    padded = jnp.pad(centre, ((1, 1), (1, 1), (0, 0)), mode="edge")
    neighbours = jnp.stack([padded[1 + di:1 + di + height, 1 + dj:1 + dj + width]
                            for di, dj in NEIGHBOUR_OFFSETS])  # [8, H, W, C]
    signal = jnp.mean(neighbours ** 2, axis=0)
    noise = jnp.mean((neighbours - centre) ** 2, axis=0)
    return jnp.mean(jnp.log1p(noise / (signal + eps)))


@jax.custom_vjp
def _nd_probe(features: jnp.ndarray, param: jnp.ndarray, nd_target: jnp.ndarray) -> jnp.ndarray:
    return features


def _nd_probe_fwd(features: jnp.ndarray, param: jnp.ndarray, nd_target: jnp.ndarray):
    return features, (param, nd_target)


def _nd_probe_bwd(residuals, cotangent: jnp.ndarray):
    param, nd_target = residuals
    param_grad = jnp.broadcast_to(nd_target - normalized_discontinuity(cotangent), jnp.shape(param))
    return cotangent, param_grad.astype(param.dtype), jnp.zeros_like(nd_target)


_nd_probe.defvjp(_nd_probe_fwd, _nd_probe_bwd)


def nd_probe(features: jnp.ndarray, param: jnp.ndarray, nd_target: jnp.ndarray) -> jnp.ndarray:
    """Identity on features [B, H, W, C]; its backward pass sets P's gradient to the dual objective.

    Backward: features get their cotangent g = dL/dfeatures unchanged; `param` (the scalar P)
    gets nd_target - normalized_discontinuity(g); nd_target gets 0. So jax.grad(loss) w.r.t.
    P is nd_target - ND and gradient descent raises P when ND > nd_target. The ND itself is
    nd_target - that gradient. If features feed the loss along several paths the cotangents are
    summed first (one ND of the total gradient); each separate nd_probe call adds its own term.
    """
    return _nd_probe(features, jnp.asarray(param), jnp.asarray(nd_target))

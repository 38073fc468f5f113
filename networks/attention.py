"""Implicit attention (IAP): a self-attention bottleneck over image patches, down to single
pixels, in time and memory linear in the patches (docs/algorithms.md, "Implicit attention").

Pure functions of the method, each testable alone:
- `gaussian_projection`: the random projection Omega [r, D] (i.i.d. or Gaussian-orthogonal);
- feature maps phi with E[phi(x) . phi(y)] = exp(x . y): `positive_features` (FAVOR+),
  `trig_features`, `antithetic_features`, and `hybrid_features` (the angular hybrid, as a
  query map Phi and a key map Psi with Phi(x) . Psi(y) = the hybrid estimate), with
  `angular_features` for its coefficient;
- `implicit_importance`: the column sums of the normalised attention D^-1 Q' K'^T in O(N r)
  (`hybrid_importance`: the same for the hybrid, its Kronecker features never formed), and
  `exact_importance`, the softmax reference in O(N^2);
- `patch_tokens`: pixels -> patch tokens and their centre coordinates.
`AttentionEncoder` puts them together as a pixelzoo encoder.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from pixelzoo.networks.encoders import LixContext, normalize_pixels

sg = jax.lax.stop_gradient

KERNELS = ("exact", "favor_pos", "favor_hyp", "trig", "hybrid")
OUTPUTS = ("topk_scaled", "soft_pool", "coordinates")
# The row normalisers D are clamped at this value: the trig and hybrid estimates can be
# negative or zero, and positive features can underflow (spec §5: clamp D >= eps).
MIN_NORMALISER = 1e-6
RANDOM_FEATURES = "random_features"     # the flax collection that holds Omega and Lambda
# Images whose importance is computed at once (AttentionEncoder.importance): bounds the
# memory of the [images, N, r] random features (at 84px, r = 256: 58 MiB per image).
IMPORTANCE_CHUNK = 16


def gaussian_projection(key: jax.Array, num_features: int, dim: int,
                        orthogonal: bool = True) -> jnp.ndarray:
    """Omega [num_features, dim] whose rows are marginally N(0, I_dim).

    orthogonal: rows in blocks of `dim` are exactly orthogonal (Q of the QR of a Gaussian
    matrix), each rescaled to the norm of an independent Gaussian vector (Performer's
    Gaussian-orthogonal matrix, `scaling=0`); else i.i.d. Gaussian rows.
    """
    key_blocks, key_norms = jax.random.split(key)
    if not orthogonal:
        return jax.random.normal(key_blocks, (num_features, dim))
    num_blocks = -(-num_features // dim)
    gaussians = jax.random.normal(key_blocks, (num_blocks, dim, dim))
    q, r = jnp.linalg.qr(gaussians)
    # Signs of R's diagonal moved into Q make Q Haar-distributed (each row's direction
    # uniform); without them the rows' marginals are not Gaussian and FAVOR+ is biased.
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    blocks = q.transpose(0, 2, 1)                                   # rows orthonormal
    rows = blocks.reshape(num_blocks * dim, dim)[:num_features]
    norms = jnp.linalg.norm(jax.random.normal(key_norms, (num_features, dim)), axis=-1)
    return rows * norms[:, None]


def _project(x: jnp.ndarray, omega: jnp.ndarray) -> jnp.ndarray:
    """x [..., D], omega [..., r, D] -> Omega x [..., r] (leading axes broadcast)."""
    return jnp.einsum("...d,...rd->...r", x, omega)


def _half_sq_norm(x: jnp.ndarray) -> jnp.ndarray:
    return 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)


def positive_features(x: jnp.ndarray, omega: jnp.ndarray, shift=0.0) -> jnp.ndarray:
    """FAVOR+: x [..., D] -> r^-1/2 exp(Omega x - |x|^2/2 - shift) [..., r]."""
    return jnp.exp(_project(x, omega) - _half_sq_norm(x) - shift) / math.sqrt(omega.shape[-2])


def antithetic_features(x: jnp.ndarray, omega: jnp.ndarray, shift=0.0) -> jnp.ndarray:
    """Positive features with antithetic draws +-Omega: x [..., D] ->
    (2r)^-1/2 exp(-|x|^2/2 - shift) [exp(Omega x), exp(-Omega x)] [..., 2r]."""
    projected = _project(x, omega)
    logits = jnp.concatenate([projected, -projected], axis=-1) - _half_sq_norm(x) - shift
    return jnp.exp(logits) / math.sqrt(2 * omega.shape[-2])


def trig_features(x: jnp.ndarray, omega: jnp.ndarray, shift=0.0) -> jnp.ndarray:
    """Random Fourier features of the softmax kernel: x [..., D] ->
    r^-1/2 exp(|x|^2/2 - shift) [cos Omega x, sin Omega x] [..., 2r]."""
    projected = _project(x, omega)
    scale = jnp.exp(_half_sq_norm(x) - shift) / math.sqrt(omega.shape[-2])
    return scale * jnp.concatenate([jnp.cos(projected), jnp.sin(projected)], axis=-1)


def angular_features(x: jnp.ndarray, lam: jnp.ndarray) -> jnp.ndarray:
    """x [..., D] -> sign(Lambda x) / sqrt(2 r_lambda) [..., r_lambda]; for x, y at angle
    theta, E[phi(x) . phi(y)] = 1/2 - theta / pi."""
    return jnp.sign(_project(x, lam)) / math.sqrt(2 * lam.shape[-2])


def _outer(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """[..., m], [..., n] -> [..., m * n]: the Kronecker product of the last axes."""
    return (a[..., :, None] * b[..., None, :]).reshape(*a.shape[:-1], a.shape[-1] * b.shape[-1])


def hybrid_features(x: jnp.ndarray, omega: jnp.ndarray, lam: jnp.ndarray, keys: bool,
                    shift=0.0) -> jnp.ndarray:
    """The angular hybrid estimator linearised: x [..., D] -> [..., 4r (1 + r_lambda)].

    Queries take Phi = [t/sqrt2, p/sqrt2, l (x) t, l (x) p] and keys (keys=True) Psi =
    [t/sqrt2, p/sqrt2, l (x) t, -l (x) p], with t = trig_features, p = antithetic_features
    (the same Omega), l = angular_features (an independent Lambda). Then Phi(x) . Psi(y) =
    (1/2 - s) K_pos + (1/2 + s) K_trig, s = l(x) . l(y): the positive estimate gets the
    weight lambda = 1/2 - s, unbiased for theta / pi, so that the hybrid is exact where
    each base estimator is (trig at theta = 0, positive at theta = pi).
    """
    trig = trig_features(x, omega, shift)
    positive = antithetic_features(x, omega, shift)
    angular = angular_features(x, lam)
    sign = -1.0 if keys else 1.0
    return jnp.concatenate([trig / math.sqrt(2), positive / math.sqrt(2),
                            _outer(angular, trig), sign * _outer(angular, positive)], axis=-1)


def hybrid_estimate(x: jnp.ndarray, y: jnp.ndarray, omega: jnp.ndarray,
                    lam: jnp.ndarray) -> jnp.ndarray:
    """The direct hybrid formula, [..., D] x2 -> [...]: lambda K_pos + (1 - lambda) K_trig
    with lambda = 1/2 - angular(x) . angular(y) (the reference `hybrid_features` meets)."""
    k_trig = jnp.sum(trig_features(x, omega) * trig_features(y, omega), axis=-1)
    k_pos = jnp.sum(antithetic_features(x, omega) * antithetic_features(y, omega), axis=-1)
    lam_hat = 0.5 - jnp.sum(angular_features(x, lam) * angular_features(y, lam), axis=-1)
    return lam_hat * k_pos + (1.0 - lam_hat) * k_trig


def log_feature_scale(x: jnp.ndarray, omega: jnp.ndarray, kernel: str) -> jnp.ndarray:
    """x [..., N, D] -> [..., N, 1]: the log of the largest exponential factor of each
    token's features (a shift subtracted in the exponent keeps them in float range)."""
    half_sq = _half_sq_norm(x)
    projected = _project(x, omega)
    if kernel == "favor_pos":
        return jnp.max(projected, axis=-1, keepdims=True) - half_sq
    antithetic = jnp.max(jnp.abs(projected), axis=-1, keepdims=True) - half_sq
    if kernel == "favor_hyp":
        return antithetic
    if kernel == "trig":
        return half_sq
    return jnp.maximum(antithetic, half_sq)     # hybrid: both parts under one shift


def attention_features(q: jnp.ndarray, k: jnp.ndarray, omega: jnp.ndarray, lam: jnp.ndarray,
                       kernel: str) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Stabilised random features (Q' [..., N, F], K' [..., N, F]) of scaled queries and keys
    q, k [..., N, D], estimating exp(q . k) up to constants that cancel in the importance:
    a query's shift is its own (a per-row factor of D^-1 Q' K'^T), the keys' is their
    maximum over tokens (a common factor). Shifts carry no gradient."""
    shift_q = sg(log_feature_scale(q, omega, kernel))
    shift_k = sg(jnp.max(log_feature_scale(k, omega, kernel), axis=-2, keepdims=True))
    if kernel == "hybrid":
        return (hybrid_features(q, omega, lam, False, shift_q),
                hybrid_features(k, omega, lam, True, shift_k))
    feature_map = {"favor_pos": positive_features, "favor_hyp": antithetic_features,
                   "trig": trig_features}[kernel]
    return feature_map(q, omega, shift_q), feature_map(k, omega, shift_k)


def implicit_importance(q_features: jnp.ndarray, k_features: jnp.ndarray,
                        min_normaliser: float = MIN_NORMALISER) -> jnp.ndarray:
    """Column sums of the row-normalised attention D^-1 Q' K'^T without forming it, in
    O(N r) time and memory: Q', K' [..., N, r] -> importance [..., N] (sums to N).

    s = K'^T 1, D = Q' s (each clamped at min_normaliser), w = Q'^T D^-1, importance = K' w.
    """
    key_sum = jnp.sum(k_features, axis=-2)                                  # [..., r]
    normaliser = jnp.einsum("...nr,...r->...n", q_features, key_sum)
    normaliser = jnp.maximum(normaliser, min_normaliser)
    weights = jnp.einsum("...nr,...n->...r", q_features, 1.0 / normaliser)  # [..., r]
    return jnp.einsum("...nr,...r->...n", k_features, weights)


def hybrid_importance(q: jnp.ndarray, k: jnp.ndarray, omega: jnp.ndarray, lam: jnp.ndarray,
                      min_normaliser: float = MIN_NORMALISER) -> jnp.ndarray:
    """`implicit_importance` of the hybrid features (`hybrid_features` of stabilised q, k
    [..., N, D]) without forming their Kronecker parts: [..., N], in O(N r r_lambda) time
    and O(N (r + r_lambda) + r r_lambda) memory instead of O(N r r_lambda).

    With Phi = [a/sqrt2, b/sqrt2, l (x) a, l (x) b] and Psi = [.., .., l (x) a, -l (x) b]
    the Kronecker parts of sum_j Psi(k_j) are the [r_lambda, 2r] matrices sum_j l_j a_j^T and
    sum_j l_j b_j^T, and Phi(q) . that = l^T M a (likewise for w = sum_i Phi(q_i) / D_i).
    """
    shift_q = sg(log_feature_scale(q, omega, "hybrid"))
    shift_k = sg(jnp.max(log_feature_scale(k, omega, "hybrid"), axis=-2, keepdims=True))
    qa, qb = trig_features(q, omega, shift_q), antithetic_features(q, omega, shift_q)
    ka, kb = trig_features(k, omega, shift_k), antithetic_features(k, omega, shift_k)
    ql, kl = angular_features(q, lam), angular_features(k, lam)

    def paired(l, a, b, ma, mb):        # [.., N] = l^T ma a - l^T mb b per token
        return (jnp.einsum("...nl,...lf,...nf->...n", l, ma, a)
                - jnp.einsum("...nl,...lf,...nf->...n", l, mb, b))

    outer = functools.partial(jnp.einsum, "...nl,...nf->...lf")
    normaliser = (0.5 * (qa @ jnp.sum(ka, -2)[..., None] + qb @ jnp.sum(kb, -2)[..., None])[..., 0]
                  + paired(ql, qa, qb, outer(kl, ka), outer(kl, kb)))
    inverse = 1.0 / jnp.maximum(normaliser, min_normaliser)
    wa, wb = (jnp.einsum("...n,...nf->...f", inverse, f) for f in (qa, qb))
    weighted = ql * inverse[..., None]
    return (0.5 * (ka @ wa[..., None] + kb @ wb[..., None])[..., 0]
            + paired(kl, ka, kb, outer(weighted, qa), outer(weighted, qb)))


def exact_importance(q: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
    """Column sums of softmax_rows(q k^T), q, k [..., N, D] -> [..., N]: O(N^2) memory."""
    return jnp.sum(jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2), axis=-1), axis=-2)


def patch_tokens(x: jnp.ndarray, patch: int, stride: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Images [B, H, W, C] -> (tokens [B, N, patch^2 C], centres [N, 2]).

    Patches of patch x patch pixels every `stride` pixels (N = H' W', H' = (H - patch) //
    stride + 1); centres are (row, column) of each patch's centre divided by (H, W), in (0, 1).
    """
    batch, height, width, channels = x.shape
    out_h, out_w = (height - patch) // stride + 1, (width - patch) // stride + 1
    pieces = [x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
              for i in range(patch) for j in range(patch)]
    tokens = jnp.concatenate(pieces, axis=-1).reshape(batch, out_h * out_w, -1)
    rows = (jnp.arange(out_h) * stride + patch / 2) / height
    cols = (jnp.arange(out_w) * stride + patch / 2) / width
    centres = jnp.stack(jnp.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    return tokens, centres


def num_tokens(image_size: int, patch: int, stride: int) -> int:
    """N for square images: ((image_size - patch) // stride + 1)^2."""
    return ((image_size - patch) // stride + 1) ** 2


def select_top_k(importance: jnp.ndarray, tokens: jnp.ndarray, centres: jnp.ndarray,
                 top_k: int) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The top_k tokens by importance [B, N] (the choice carries no gradient) ->
    (their importance [B, K], tokens [B, K, F], centres [B, K, 2]), most important first."""
    index = jax.lax.top_k(sg(importance), top_k)[1]                        # [B, K]
    chosen = jnp.take_along_axis(importance, index, axis=1)
    chosen_tokens = jnp.take_along_axis(tokens, index[..., None], axis=1)
    return chosen, chosen_tokens, centres[index]


def redraw_projections(variables: dict, key: jax.Array, orthogonal: bool) -> dict:
    """The encoder's variables with fresh Omega and Lambda of the same shapes from `key`
    (Performer's feature redrawing); every other variable unchanged."""
    old = variables[RANDOM_FEATURES]
    keys = dict(zip(sorted(old), jax.random.split(key, len(old))))
    fresh = {name: gaussian_projection(keys[name], *value.shape, orthogonal).astype(value.dtype)
             for name, value in old.items()}
    return {**variables, RANDOM_FEATURES: fresh}


class AttentionEncoder(nn.Module):
    """uint8 [B, H, W, C] -> features: the implicit-attention bottleneck.

    Tokens x_i are patch x patch patches (stride `stride`); q = W_Q x, k = W_K x [qk_dim],
    scaled by qk_dim^-1/4 each so that q . k is the usual q k / sqrt(d); the importance of
    each token (the column sums of the attention matrix) comes from `kernel`'s random
    features (`exact`: the softmax itself). The top_k tokens pass on:
    - output 'topk_scaled': [centre_k, importance_k * W_V [x_k, centre_k]] for each, so
      W_Q, W_K learn through the importance and W_V through the values:
      [B, top_k * (2 + value_dim)];
    - output 'soft_pool': sum_i softmax(importance)_i W_V [x_i, centre_i] over all N tokens,
      differentiable everywhere (no top-k): [B, value_dim];
    - output 'coordinates' (AttentionAgent's): the centres only, [B, 2 top_k] (no gradient
      reaches the encoder).
    Omega [num_features, qk_dim] and Lambda [angular_features, qk_dim] are drawn at init
    into the 'random_features' collection, constants that never receive a gradient.
    """

    patch: int = 1
    stride: int = 1
    qk_dim: int = 16
    value_dim: int = 32
    top_k: int = 32
    kernel: str = "favor_pos"
    num_features: int = 256
    angular_features: int = 16
    orthogonal: bool = True
    output: str = "topk_scaled"
    centered: bool = True

    def random_projections(self) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(Omega, Lambda): drawn from the 'params' rng at init, read from the state after."""
        def draw(name: str, rows: int):
            return self.variable(RANDOM_FEATURES, name, lambda: gaussian_projection(
                self.make_rng("params"), rows, self.qk_dim, self.orthogonal)).value
        return sg(draw("omega", self.num_features)), sg(draw("lambda", self.angular_features))

    def importance(self, q: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
        """Scaled q, k [B, N, qk_dim] -> importance [B, N], summing to N over tokens.

        Computed IMPORTANCE_CHUNK images at a time, and recomputed in the backward pass
        (`jax.checkpoint`) instead of stored: the random features [chunk, N, r] are the
        largest arrays, and only one chunk's exist at a time."""
        omega, lam = self.random_projections()

        @jax.checkpoint
        def one_chunk(qk: tuple[jnp.ndarray, jnp.ndarray]) -> jnp.ndarray:
            if self.kernel == "exact":
                return exact_importance(*qk)
            if self.kernel == "hybrid":
                return hybrid_importance(*qk, omega, lam)
            return implicit_importance(*attention_features(*qk, omega, lam, self.kernel))

        return jax.lax.map(one_chunk, (q, k), batch_size=min(IMPORTANCE_CHUNK, q.shape[0]))

    @nn.compact
    def __call__(self, obs: jnp.ndarray, lix_context: LixContext | None = None) -> jnp.ndarray:
        """lix_context: unused (the config refuses A-LIX with this encoder)."""
        x = normalize_pixels(obs, self.centered)
        tokens, centres = patch_tokens(x, self.patch, self.stride)
        scale = self.qk_dim ** -0.25
        q = nn.Dense(self.qk_dim, name="query")(tokens) * scale
        k = nn.Dense(self.qk_dim, name="key")(tokens) * scale
        importance = self.importance(q, k)
        value = nn.Dense(self.value_dim, name="value")
        if self.output == "soft_pool":      # [B, N, dv] values of every token: linear in N
            every_centre = jnp.broadcast_to(centres, (*tokens.shape[:-1], 2))
            values = value(jnp.concatenate([tokens, every_centre], axis=-1))
            return jnp.einsum("bn,bnd->bd", jax.nn.softmax(importance, axis=-1), values)
        chosen, chosen_tokens, chosen_centres = select_top_k(importance, tokens, centres,
                                                             self.top_k)
        values = value(jnp.concatenate([chosen_tokens, chosen_centres], axis=-1))  # [B, K, dv]
        if self.output == "coordinates":
            return chosen_centres.reshape(obs.shape[0], -1)
        features = jnp.concatenate([chosen_centres, chosen[..., None] * values], axis=-1)
        return features.reshape(obs.shape[0], -1)

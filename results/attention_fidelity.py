"""How close the implicit-attention importance is to exact attention's on real DMC frames, as
the number of random features grows (issue 19; docs/algorithms.md, "Implicit attention").

    python results/attention_fidelity.py      # writes results/attention/fidelity.{csv,md}

Frames: 24x24 pixels, 3 stacked frames (N = 576 one-pixel tokens), 4 per task from
cartpole_swingup, walker_walk, cheetah_run and reacher_easy after 10-40 random steps (seed 0).
Queries and keys: an `AttentionEncoder`'s W_Q, W_K at initialisation (seed 0), and the same
weights times 3 ('sharp': logits 9x larger, attention less uniform). For each kernel and
number of features r in {16, 64, 256, 1024} (the hybrid: r_lambda = 16), over 10 draws of the
orthogonal projections: the Spearman rank correlation of the estimated importance with the
exact one (column sums of softmax(q k^T / sqrt(d))), and the overlap of their top 32 tokens
(|top(est) & top(exact)| / 32), averaged over frames and draws.
"""
import csv
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from pixelzoo import envs
from pixelzoo.networks import attention

TASKS = ("cartpole_swingup", "walker_walk", "cheetah_run", "reacher_easy")
FEATURES = (16, 64, 256, 1024)
KERNELS = ("favor_pos", "favor_hyp", "trig", "hybrid")
SCALES = {"init": 1.0, "sharp": 3.0}
DRAWS, TOP_K, ANGULAR = 10, 32, 16
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attention")


def frames() -> np.ndarray:
    """[16, 24, 24, 9] uint8 observations, 4 per task, after random steps."""
    rng = np.random.default_rng(0)
    observations = []
    for task in TASKS:
        env = envs.make(task, seed=0, image_size=24)
        timestep = env.reset()
        spec = env.action_spec()
        for step in range(1, 41):
            timestep = env.step(rng.uniform(-1, 1, spec.shape).astype(np.float32))
            if step % 10 == 0:
                observations.append(timestep.observation)
    return np.stack(observations)


def queries_and_keys(obs: np.ndarray, scale: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Scaled q, k [F, N, 16] of the encoder at initialisation (weights times `scale`)."""
    encoder = attention.AttentionEncoder()
    params = encoder.init(jax.random.key(0), obs[:1])["params"]
    x = attention.normalize_pixels(jnp.asarray(obs), True)
    tokens, _ = attention.patch_tokens(x, 1, 1)
    d = params["query"]["kernel"].shape[1]

    def project(layer):
        return (tokens @ (scale * layer["kernel"]) + layer["bias"]) * d ** -0.25

    return project(params["query"]), project(params["key"])


@functools.partial(jax.jit, static_argnums=(2, 3))
def estimated_importance(q, k, kernel: str, features: int, draw: jax.Array) -> jax.Array:
    """Importance [F, N] of frames' q, k [F, N, d] by `kernel` with `features` orthogonal
    random features drawn from key `draw`."""
    key_omega, key_lambda = jax.random.split(draw)
    omega = attention.gaussian_projection(key_omega, features, q.shape[-1])
    lam = attention.gaussian_projection(key_lambda, ANGULAR, q.shape[-1])
    if kernel == "hybrid":
        return attention.hybrid_importance(q, k, omega, lam)
    return attention.implicit_importance(*attention.attention_features(q, k, omega, lam, kernel))


def scores(estimate: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """(Spearman correlation, top-K overlap) of one image's importances [N]."""
    top_estimate = set(np.argsort(-estimate)[:TOP_K])
    top_exact = set(np.argsort(-exact)[:TOP_K])
    return spearmanr(estimate, exact)[0], len(top_estimate & top_exact) / TOP_K


def main() -> None:
    envs.ensure_gl_backend()
    obs = frames()
    rows = []
    for scale_name, scale in SCALES.items():
        q, k = queries_and_keys(obs, scale)
        exact = np.asarray(attention.exact_importance(q, k))
        for kernel in KERNELS:
            for features in FEATURES:
                results = np.array([scores(estimate, truth)
                                    for draw in range(DRAWS)
                                    for estimate, truth in zip(
                                        np.asarray(estimated_importance(
                                            q, k, kernel, features,
                                            jax.random.key(1000 + draw))),
                                        exact)])
                rows.append(dict(weights=scale_name, kernel=kernel, features=features,
                                 spearman=round(float(results[:, 0].mean()), 4),
                                 top_k_overlap=round(float(results[:, 1].mean()), 4),
                                 exact_importance_std=round(float(exact.std(1).mean()), 4)))
                print(rows[-1], file=sys.stderr)
    write(rows)


def write(rows: list[dict]) -> None:
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "fidelity.csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Implicit attention against exact attention, 24x24 DMC frames (N = 576)", "",
             "`python results/attention_fidelity.py` (see its docstring). Mean over 16 frames "
             f"and {DRAWS} draws of the orthogonal projections; top-{TOP_K} overlap.", ""]
    for weights in SCALES:
        std = next(r["exact_importance_std"] for r in rows if r["weights"] == weights)
        lines += [f"## Weights: {weights} (std of the exact importance over tokens: {std})",
                  "", "| kernel | " + " | ".join(f"r={f}: rho / top-K" for f in FEATURES)
                  + " |", "| --- |" + " --- |" * len(FEATURES)]
        for kernel in KERNELS:
            cells = [f"{r['spearman']:.3f} / {r['top_k_overlap']:.3f}" for f in FEATURES
                     for r in rows if r["weights"] == weights and r["kernel"] == kernel
                     and r["features"] == f]
            lines.append(f"| {kernel} | " + " | ".join(cells) + " |")
        lines.append("")
    with open(os.path.join(OUT, "fidelity.md"), "w") as file:
        file.write("\n".join(lines))


if __name__ == "__main__":
    main()

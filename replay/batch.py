"""The Batch type: what a learner consumes."""
from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    """A batch of n-step transitions; a NamedTuple, so a JAX pytree.

    Attributes:
      obs: uint8 [B, H, W, 3*frame_stack] (pixels, oldest frame first) or the
        observation spec's dtype [B, *obs_shape] (state observations).
      action: float32 [B, A], the action taken at obs.
      reward: float32 [B], the n-step return sum_i gamma^i (prod of earlier env
        discounts in the window) r_{t+1+i}.
      discount: float32 [B], gamma^n times the product of the window's env
        discounts, so the learner's target is reward + discount * Q(next_obs).
      next_obs: like obs, n timesteps later in the same episode.
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    next_obs: np.ndarray

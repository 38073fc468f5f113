"""One frozen configuration for every agent, the named presets, per-task overrides.

A run is described by a single `Config` in two sections: agent fields (`AGENT_FIELDS`: the
agent's parts, base algorithm, encoder, augmentation, critic, MLP, and its
hyperparameters) and run fields (`RUN_FIELDS`: the environment / replay / schedule settings
of the launcher). Presets (`PRESETS`) are named overrides of the defaults, which are
the DrQ-v2 recipe (docs/algorithms.md, DrQ-v2); `task_overrides` holds the per-task changes of
each paper's recipe. Frames are environment steps (before action repeat), steps are agent
steps.
"""
import dataclasses
import difflib
import json
import math
from typing import Any, Mapping

from pixelzoo.networks import min_image_size, num_tokens
from pixelzoo.networks.attention import (AttentionEncoder, KERNELS as IA_KERNELS,
                                         OUTPUTS as IA_OUTPUTS)

BASES = ("ddpg", "sac")
AUGS = ("shift", "none")
MLPS = ("plain", "d2rl")
TRUNKS = ("layernorm", "none")
OBS_TYPES = ("pixels", "state")
REPLAYS = ("host", "device")
POLICY_SPACES = ("action", "routine")
ROUTINE_MASKS = ("intended", "released")
ROUTINE_STEP_ORDERS = ("joint", "per_critic")
IA_REDRAWS = ("never", "every_update")
# encoder='attention' with ia_kernel='exact' builds the [N, N] attention matrix of each image:
# refused above this many tokens (48px images with 1-pixel patches).
IA_EXACT_MAX_TOKENS = 2304


@dataclasses.dataclass(frozen=True)
class Config:
    """Every field of a pixelzoo run. Defaults: DrQ-v2 on an easy task."""

    # Agent parts.
    base: str = "ddpg"                  # ddpg (DrQ-v2) or sac (DrQ)
    encoder: str = "conv"               # conv, flare (per-frame latents and their flow), or
                                        # attention (implicit-attention bottleneck, ia_*)
    actor: str = "auto"                 # auto: the base's own (ddpg: deterministic, sac:
                                        # tanh_gaussian), or a registered actor kind
    aug: str = "shift"                  # random shift (pad 4, edge replicate) or none
    lix: bool = False                   # A-LIX: LIX layers after every encoder ReLU
    critic: str = "twin"                # twin (min of 2), gpl (learned pessimism),
                                        # gpl_quantile (GPL on quantile critics), or a
                                        # registered critic kind
    num_critics: int = 2
    mlp: str = "plain"                  # plain or d2rl (input fed to every hidden layer)
    mlp_depth: int = 2                  # hidden layers of actor and critic MLPs
    trunk: str = "layernorm"            # before the actor and critic MLPs: layernorm
                                        # (Linear -> LayerNorm -> tanh to feature_dim, no
                                        # tanh with Flare) or none (the MLPs read the
                                        # encoder's output: the released state networks)
    mlp_init_gain: float = 1.0          # orthogonal gain of the actor and critic MLPs
                                        # (DrQ-v2: 1; released Routines and SSPG: sqrt 2)
    # Environment.
    obs_type: str = "pixels"
    image_size: int = 84
    frame_stack: int = 3
    action_repeat: int = 2
    # Learner.
    batch_size: int = 256
    lr: float = 1e-4
    feature_dim: int = 50
    hidden_dim: int = 1024
    nstep: int = 3
    discount: float = 0.99
    tau: float = 0.01                   # Polyak rate of the target critic
    update_every_steps: int = 2         # one update every this many agent steps
    updates_per_call: int = 1           # U updates fused in one jitted lax.scan, run every
                                        # U * update_every_steps agent steps (same rate)
    actor_update_every: int = 1         # in updates
    target_update_every: int = 1        # in updates
    centered_pixels: bool = True        # obs / 255 - 0.5 (DrQ-v2) or obs / 255 (DrQ)
    target_encoder: bool = False        # DrQ: the target critic holds its own encoder copy
    # DDPG exploration: std linear from stddev_init to stddev_final over stddev_steps agent steps.
    stddev_init: float = 1.0
    stddev_final: float = 0.1
    stddev_steps: int = 100_000
    stddev_clip: float = 0.3
    # SAC.
    init_temperature: float = 0.1
    num_target_augs: int = 2            # K
    num_q_augs: int = 2                 # M
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    # A-LIX (released-code defaults; paper Table 6: lix_init=0.4 i.e. S=1.0 px,
    # lix_nd_target=0.635, lix_lr=3e-3). S = lix_max_shift * P pixels, P in [0, 1].
    lix_init: float = 0.5
    lix_nd_target: float = 0.535
    lix_lr: float = 2e-3
    lix_b1: float = 0.5
    lix_max_shift: float = 2.5
    # GPL: target mean_i Q_i - beta * mean_{i != j} |Q_i - Q_j|, beta by dual TD-learning.
    gpl_beta_init: float = 0.5
    gpl_beta_lr: float = 1e-4
    gpl_beta_b1: float = 0.5
    gpl_learn_beta: bool = True
    # GPL's quantile critics (critic='gpl_quantile'): K quantiles per critic at the midpoints
    # (j + 1/2) / K, trained by the quantile Huber loss with threshold kappa.
    num_quantiles: int = 51
    quantile_kappa: float = 1.0
    # Optimistic actor: beta_pi = beta + optimism_shift * (1 - t / optimism_decay_steps)
    # for t < optimism_decay_steps agent steps (optimism_shift <= 0; 0 turns it off).
    optimism_shift: float = 0.0
    optimism_decay_steps: int = 1
    # Implicit attention (encoder='attention'): patch tokens (ia_patch px every ia_stride px),
    # importance = column sums of softmax(q k^T / sqrt(ia_qk_dim)) estimated by ia_kernel
    # (exact, favor_pos, favor_hyp, trig, hybrid) with ia_features random features
    # (ia_angular_features for the hybrid's angular weight), orthogonal or i.i.d.; the top
    # ia_top_k tokens pass on as [centre, importance * value] (ia_output='topk_scaled') or
    # their centres only ('coordinates'), or every token's value is pooled with weights
    # softmax(importance) ('soft_pool'). ia_redraw: never, or every_update (fresh Omega,
    # Lambda after each update).
    ia_patch: int = AttentionEncoder.patch
    ia_stride: int = AttentionEncoder.stride
    ia_qk_dim: int = AttentionEncoder.qk_dim
    ia_value_dim: int = AttentionEncoder.value_dim
    ia_top_k: int = AttentionEncoder.top_k
    ia_kernel: str = AttentionEncoder.kernel
    ia_features: int = AttentionEncoder.num_features
    ia_angular_features: int = AttentionEncoder.angular_features
    ia_orthogonal: bool = AttentionEncoder.orthogonal
    ia_redraw: str = "never"
    ia_output: str = AttentionEncoder.output
    # SSPG's reasoning-chain actor (actor='rmc'; docs/algorithms.md, SSPG).
    sspg_num_chains: int = 64           # M parallel chains for acting (per chain set)
    sspg_max_steps: int = 16            # most reasoning steps of an acting chain
    sspg_train_max_steps: int = 16      # most steps of the update's chains: L = ceil(m) is
                                        # clipped to it
    sspg_train_program: str = "per_length"  # per_length: one compiled update per chain
                                        # length L (the Learner picks it from the state);
                                        # masked: one update running sspg_train_max_steps
                                        # steps, masked to the first L
    sspg_rhat_threshold: float = 1.1    # acting stops once Gelman-Rubin R-hat < this
    sspg_init_steps: float = 4.0        # initial running average of reasoning steps
    sspg_ema_decay: float = 0.99        # decay of that running average
    sspg_explore_steps: int = 4         # 'released': the fixed exploration chain's length
    sspg_chain_backprop: int = 2        # parameter gradients through the first this many
                                        # transitions of a training chain
    sspg_act_mode: str = "released"     # released (DMC code: fixed-length exploration
                                        # chain, adaptive unroll measured) or adaptive
    sspg_eval: str = "argmax_q"         # argmax_q (best chain sample by the critic) or
                                        # random_chain (a random chain's final state)
    # Temperature target entropy of the rmc actor's update: A * linear(start -> end over
    # stddev_steps agent steps), per action dimension (-1, -1: SAC's -A).
    target_entropy_start: float = -1.0
    target_entropy_end: float = -1.0
    # Routines (policy_space='routine'; docs/algorithms.md, Routines): the actor outputs a
    # routine z [routine_dim] that a decoder turns into up to routine_len actions, run
    # open-loop; Routine SAC on the sac base, Routine TD3 on the ddpg base.
    policy_space: str = "action"        # action, or routine
    routine_len: int = 4                # L, the most actions one routine stands for
    routine_dim: int = 8                # Dz (per task in the rtsac / rttd3 recipes)
    routine_enc_embed: int = 16         # prefix encoder: per-action embedding
    routine_joint_embed: int = 64       # prefix encoder: per-position (summed) embedding
    routine_dec_embed: int = 64         # decoder hidden width (routine_len slices of it)
    routine_lr: float = 1e-3            # Adam of the prefix encoder and decoder
    routine_alpha_lr: float = 1e-4      # Routine SAC's temperature (Adam, beta1 0.5)
    routine_mto_weight: float = 1.0     # weight of J_mto (z vs its re-encoding)
    routine_noise: float = 0.2          # Routine TD3: exploration noise std on z
    routine_target_noise: float = 0.1   # Routine TD3: target noise std on z (clip
                                        # stddev_clip)
    routine_action_noise: float = 0.1   # Routine TD3: exploration noise std on actions
    routine_action_noise_clip: float = 0.5
    routine_mask: str = "intended"      # intended, or released (the authors' row-0 mask)
    routine_warmup_updates: int = 1000  # updates run at once at the first update step
    routine_step_order: str = "joint"   # joint: one step of all critics, prefix encoder
                                        # and decoder; per_critic: the released order, for
                                        # each critic its own step (own Adam, fresh target),
                                        # then a prefix encoder + decoder step
    # SEER (stored embeddings): at seer_freeze_frames (0 = never) everything up to the
    # low-dimensional feature freezes, the replay becomes one of stored latents
    # (seer_num_copies randomly shifted copies per observation), and updates train the heads.
    seer_freeze_frames: int = 0
    seer_num_copies: int = 4
    # Replay and schedule (frames are env steps before action repeat).
    replay_capacity: int = 1_000_000    # transitions
    replay: str = "host"                # host, or device: frames mirrored on the accelerator,
                                        # stacks and n-step returns gathered inside the update
    num_seed_frames: int = 4000         # uniform random actions, no updates
    eval_every_frames: int = 10_000
    num_eval_episodes: int = 10
    checkpoint_every_frames: int = 50_000
    log_every_frames: int = 1000
    save_video: bool = False

    def replace(self, **changes: Any) -> "Config":
        """A copy with `changes` applied, checked for unknown fields."""
        check_field_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        check_field_names(values)
        return cls(**values)

    @property
    def hidden_dims(self) -> tuple[int, ...]:
        return (self.hidden_dim,) * self.mlp_depth


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Config))
# The two sections of a Config. Run fields say how the launcher runs the agent (its
# environment, replay, schedule and logs, and when SEER freezes); agent fields, every other
# one, say what agents.make builds. Both are `--config.<field>` flags alike.
RUN_FIELDS = ("obs_type", "image_size", "frame_stack", "action_repeat", "seer_freeze_frames",
              "routine_warmup_updates",
              "replay_capacity", "replay", "num_seed_frames", "eval_every_frames",
              "num_eval_episodes", "checkpoint_every_frames", "log_every_frames", "save_video")
AGENT_FIELDS = tuple(name for name in FIELD_NAMES if name not in RUN_FIELDS)
FIELD_TYPES = {f.name: type(getattr(Config(), f.name)) for f in dataclasses.fields(Config)}


def check_field_names(values: Mapping[str, Any]) -> None:
    """ValueError naming any unknown config field, with close matches and the valid ones."""
    unknown = [name for name in values if name not in FIELD_NAMES]
    if unknown:
        hints = {name: difflib.get_close_matches(name, FIELD_NAMES, n=1) for name in unknown}
        hint_text = "; ".join(f"{n!r} (did you mean {h[0]!r}?)" if h else repr(n)
                              for n, h in hints.items())
        raise ValueError(f"unknown config field {hint_text}. Valid fields: "
                         + ", ".join(FIELD_NAMES))


_ROUTINE_STATE_RECIPE = dict(
    policy_space="routine", obs_type="state", action_repeat=1, nstep=1,
    lr=1e-3, batch_size=256, hidden_dim=256, mlp_depth=2, tau=0.005, update_every_steps=1,
    actor_update_every=2, target_update_every=2, num_target_augs=1, num_q_augs=1,
    init_temperature=0.1, num_seed_frames=1000, stddev_init=0.2, stddev_final=0.2,
    stddev_clip=0.3)
# Routines4RL's state networks and step order, the rtsac / rttd3 defaults from state: no
# trunk (the MLPs read the state), orthogonal gain sqrt(2), and each critic its own step.
# The per-critic order exists only for the twin critic without a trunk, so compositions
# with another critic (gpl) keep the joint step. Pixels keep pixelzoo's trunk and joint step.
ROUTINE_RELEASED_STATE_NETWORKS = dict(trunk="none", mlp_init_gain=math.sqrt(2))
# Routines4RL's routine dimension per task (domain prefix or task name); 8 elsewhere.
ROUTINE_DIMS = {"cartpole_": 4, "ball_in_cup_catch": 8, "finger_": 8, "reacher_": 8,
                "fish_": 20, "cheetah_run": 24, "walker_": 24}


def routine_dim_for(task: str) -> int:
    """The released recipe's routine dimension of `task`."""
    return next((dim for prefix, dim in ROUTINE_DIMS.items() if task.startswith(prefix)), 8)


# Named agents: overrides of the DrQ-v2 defaults (docs/algorithms.md).
PRESETS: dict[str, dict[str, Any]] = {
    "drqv2": {},
    # Flare's encoder on the DrQ-v2 base; feature dim 64 as in its released scripts.
    "flare": dict(encoder="flare", feature_dim=64),
    # A-LIX: DrQ-v2 without random shifts, LIX layers with a learned strength.
    "alix": dict(aug="none", lix=True),
    # GPL: DrQ-v2 with the learned-pessimism critic ensemble (see README on GPL-Pix).
    "gpl": dict(critic="gpl"),
    # GPL with quantile critics (51 per critic), as the authors' released code has them.
    "gpl_quantile": dict(critic="gpl_quantile"),
    # D2RL: dense MLPs of depth 4 for the actor and every critic.
    "d2rl": dict(mlp="d2rl", mlp_depth=4),
    "drq": dict(
        base="sac", centered_pixels=False, target_encoder=True, lr=1e-3, batch_size=512,
        nstep=1, update_every_steps=1, actor_update_every=2, target_update_every=2,
        replay_capacity=100_000, num_seed_frames=1000 * 2, action_repeat=2,
    ),
    # IAP: DrQ-v2 with the implicit-attention bottleneck over single pixels (pixelzoo's
    # gradient-trained design: docs/algorithms.md, "Implicit attention").
    "iap": dict(encoder="attention"),
    # SSPG: the reasoning-chain actor on a DrQ-v2-style SAC (one shift, no target encoder,
    # n-step 3, lr 1e-4), two GPL critics with beta fixed at 0.75 (released pixel recipe).
    "sspg": dict(
        base="sac", actor="rmc", critic="gpl", num_critics=2, gpl_beta_init=0.75,
        gpl_learn_beta=False, num_target_augs=1, num_q_augs=1, target_encoder=False,
        centered_pixels=True, lr=1e-4, batch_size=256, nstep=3, update_every_steps=2,
        actor_update_every=1, target_update_every=1, tau=0.01, init_temperature=0.1,
        target_entropy_start=0.5, target_entropy_end=-1.0, num_seed_frames=4000,
    ),
    # SEER: DrQ-v2 whose encoder and trunks freeze at the authors' DMC freeze point
    # (10k agent steps at action repeat 8 = 80k frames) and train on stored latents.
    "seer": dict(seer_freeze_frames=80_000, seer_num_copies=4),
    # Routines from states at action repeat 1 (Routines4RL's state recipes): Routine SAC
    # and Routine TD3, L = 4, lr 1e-3 everywhere, Polyak 0.995 every 2 updates with the
    # actor, 1000 uniform steps; routine_dim per task (task_overrides). From state, the
    # released networks and per-critic step order (released_routine_state_networks) and no
    # augmentation; from pixels, DrQ-v2's random shift.
    "rtsac": dict(_ROUTINE_STATE_RECIPE, base="sac"),
    "rttd3": dict(_ROUTINE_STATE_RECIPE, base="ddpg"),
}

# DrQ-v2 exploration schedule per task group, in agent steps (docs/algorithms.md, DrQ-v2).
_DRQV2_STDDEV_STEPS = {"easy": 100_000, "medium": 500_000, "hard": 2_000_000}
# DrQ's action repeat on the six PlaNet-benchmark tasks (docs/algorithms.md, DrQ); every
# other task uses 2, as the authors' "Dreamer benchmark" runs and their curves do.
DRQ_PLANET_ACTION_REPEAT = {"cartpole_swingup": 8, "finger_spin": 2, "walker_walk": 2,
                            "cheetah_run": 4, "reacher_easy": 4, "cup_catch": 4,
                            "ball_in_cup_catch": 4}
DRQ_DEFAULT_ACTION_REPEAT = 2
# Presets on the sac base that take DrQ-v2's per-task recipe (its exploration horizon,
# walker, humanoid, quadruped_run) rather than DrQ's action repeats.
DRQV2_RECIPE_SAC_PRESETS = ("sspg",)
SSPG_ACT_MODES = ("released", "adaptive")
SSPG_TRAIN_PROGRAMS = ("per_length", "masked")
SSPG_EVALS = ("argmax_q", "random_chain")


def task_overrides(preset: str, task: str, task_group: str | None) -> dict[str, Any]:
    """The per-task changes of `preset`'s paper recipe for `task` (empty when none apply).

    task_group: 'easy' | 'medium' | 'hard' for the 24 DrQ-v2 tasks, else None.
    """
    base = PRESETS[preset].get("base", "ddpg")
    changes: dict[str, Any] = {}
    if PRESETS[preset].get("policy_space") == "routine":
        return {"routine_dim": routine_dim_for(task)}
    if base == "sac" and preset not in DRQV2_RECIPE_SAC_PRESETS:
        changes["action_repeat"] = DRQ_PLANET_ACTION_REPEAT.get(task, DRQ_DEFAULT_ACTION_REPEAT)
        # 1000 seed steps (agent steps) in the DrQ recipe, whatever the action repeat.
        changes["num_seed_frames"] = 1000 * changes["action_repeat"]
        return changes
    if task_group is not None:
        changes["stddev_steps"] = _DRQV2_STDDEV_STEPS[task_group]
    if task.startswith("walker_"):
        changes.update(batch_size=512, nstep=1)
    if task.startswith("humanoid_"):
        changes.update(lr=8e-5, feature_dim=100)
    if task == "quadruped_run":
        changes["replay_capacity"] = 100_000
    return changes


def _choice_error(field: str, value: Any, choices: tuple) -> str:
    return f"{field}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}"


def validate(config: Config) -> list[str]:
    """Every problem with `config` as a short message (empty list when it is valid)."""
    errors = _choice_and_type_errors(config)
    if errors:
        return errors
    return (_range_errors(config) + _part_errors(config) + _combination_errors(config)
            + _attention_errors(config) + _routine_errors(config))


def _choice_and_type_errors(config: Config) -> list[str]:
    """Unknown part names (the registries' for encoders, actors, critics) and wrong types."""
    from pixelzoo.agents import parts   # the registries (parts imports this module)
    errors = []
    pixel_encoders = tuple(name for name in parts.ENCODERS if name != "state")
    for field, choices in (("base", BASES), ("encoder", pixel_encoders), ("aug", AUGS),
                           ("actor", ("auto", *parts.ACTORS)), ("critic", tuple(parts.CRITICS)),
                           ("mlp", MLPS), ("trunk", TRUNKS), ("obs_type", OBS_TYPES), ("replay", REPLAYS),
                           ("ia_kernel", IA_KERNELS), ("ia_output", IA_OUTPUTS),
                           ("ia_redraw", IA_REDRAWS),
                           ("sspg_act_mode", SSPG_ACT_MODES), ("sspg_eval", SSPG_EVALS),
                           ("sspg_train_program", SSPG_TRAIN_PROGRAMS),
                           ("policy_space", POLICY_SPACES), ("routine_mask", ROUTINE_MASKS),
                           ("routine_step_order", ROUTINE_STEP_ORDERS)):
        if getattr(config, field) not in choices:
            errors.append(_choice_error(field, getattr(config, field), choices))
    for name in FIELD_NAMES:
        value, expected = getattr(config, name), FIELD_TYPES[name]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            errors.append(f"{name}={value!r} must be of type {expected.__name__}")
    return errors


def _range_errors(config: Config) -> list[str]:
    """Numbers outside their range."""
    errors = []
    for name in ("frame_stack", "action_repeat", "batch_size", "feature_dim", "hidden_dim",
                 "nstep", "update_every_steps", "updates_per_call", "actor_update_every",
                 "target_update_every", "num_critics", "mlp_depth", "replay_capacity",
                 "num_target_augs", "num_q_augs", "eval_every_frames",
                 "checkpoint_every_frames", "log_every_frames", "stddev_steps",
                 "seer_num_copies", "num_quantiles", "ia_patch", "ia_stride", "ia_qk_dim",
                 "ia_value_dim", "ia_top_k", "ia_features", "ia_angular_features"):
        if getattr(config, name) < 1:
            errors.append(f"{name}={getattr(config, name)!r} must be >= 1")
    for name in ("num_seed_frames", "num_eval_episodes", "stddev_final", "stddev_clip",
                 "seer_freeze_frames", "lix_max_shift", "optimism_decay_steps"):
        if getattr(config, name) < 0:
            errors.append(f"{name}={getattr(config, name)!r} must be >= 0")
    for name in ("lr", "init_temperature", "stddev_init", "lix_lr", "gpl_beta_lr",
                 "quantile_kappa", "mlp_init_gain"):
        if getattr(config, name) <= 0:
            errors.append(f"{name}={getattr(config, name)!r} must be > 0")
    if not 0 < config.discount <= 1:
        errors.append(f"discount={config.discount!r} must be in (0, 1]")
    if not 0 < config.tau <= 1:
        errors.append(f"tau={config.tau!r} must be in (0, 1]")
    errors += _sspg_range_errors(config)
    if config.log_std_min >= config.log_std_max:
        errors.append("log_std_min must be < log_std_max")
    if config.optimism_shift > 0:
        errors.append("optimism_shift must be <= 0 (an optimistic shift lowers beta)")
    if not 0 <= config.lix_init <= 1:
        errors.append(f"lix_init={config.lix_init!r} must be in [0, 1]")
    if not 0 <= config.lix_b1 < 1 or not 0 <= config.gpl_beta_b1 < 1:
        errors.append("lix_b1 and gpl_beta_b1 must be in [0, 1)")
    if (config.obs_type == "pixels" and config.encoder != "attention"
            and config.image_size < min_image_size()):
        errors.append(f"image_size={config.image_size} is too small for the conv encoder; "
                      f"allowed range: image_size >= {min_image_size()}")
    return errors


def _sspg_range_errors(config: Config) -> list[str]:
    """The rmc actor's numbers outside their range."""
    errors = []
    for name, low in (("sspg_num_chains", 2), ("sspg_max_steps", 2), ("sspg_explore_steps", 1),
                      ("sspg_train_max_steps", 1)):
        if getattr(config, name) < low:
            errors.append(f"{name}={getattr(config, name)!r} must be >= {low}")
    if config.sspg_chain_backprop < 0:
        errors.append(f"sspg_chain_backprop={config.sspg_chain_backprop!r} must be >= 0")
    if not 0 < config.sspg_ema_decay < 1:
        errors.append(f"sspg_ema_decay={config.sspg_ema_decay!r} must be in (0, 1)")
    if config.sspg_rhat_threshold <= 1:
        errors.append(f"sspg_rhat_threshold={config.sspg_rhat_threshold!r} must be > 1 "
                      "(R-hat tends to 1 as chains mix)")
    if not 1 <= config.sspg_init_steps <= config.sspg_max_steps:
        errors.append(f"sspg_init_steps={config.sspg_init_steps!r} must be in "
                      f"[1, sspg_max_steps={config.sspg_max_steps}]")
    return errors


def _part_errors(config: Config) -> list[str]:
    """What the chosen critic kind refuses (and an optimistic shift for a kind without
    learned pessimism), and an actor kind on a base it does not fit."""
    from pixelzoo.agents import parts
    critic_kind = parts.CRITICS[config.critic]
    errors = list(critic_kind.config_errors(config))
    if config.optimism_shift != 0 and critic_kind.step is None:
        errors.append(f"optimism_shift shifts the actor's beta of a learned-pessimism critic "
                      f"(critic='gpl' or 'gpl_quantile'); critic={config.critic!r} has none")
    actor = parts.actor_name(config)
    if config.base not in parts.ACTORS[actor].bases:
        errors.append(f"actor={actor!r} does not fit base={config.base!r}; it fits "
                      f"{', '.join(parts.ACTORS[actor].bases)} (actor='auto' picks the "
                      "base's own)")
    return errors


def _combination_errors(config: Config) -> list[str]:
    """Fields that make no sense together."""
    errors = []
    if config.batch_size > config.replay_capacity:
        errors.append(f"batch_size={config.batch_size} is larger than "
                      f"replay_capacity={config.replay_capacity}")
    if config.obs_type == "state" and config.aug != "none":
        errors.append(f"aug={config.aug!r} needs pixel observations; use aug='none' with "
                      "obs_type='state'")
    if config.obs_type == "state" and (config.lix or config.encoder != "conv"):
        errors.append(f"lix and encoder={config.encoder!r} need pixel observations "
                      "(obs_type='pixels')")
    if config.actor == "rmc" and (config.num_target_augs != 1 or config.num_q_augs != 1):
        errors.append("actor='rmc' trains on one random shift of obs and of next_obs "
                      "(SSPG's update): set num_target_augs=1 and num_q_augs=1")
    if config.lix and config.base != "ddpg" and config.actor != "rmc":
        errors.append("lix=True is implemented on the ddpg base (DrQ-v2, as in A-LIX) and "
                      "the rmc actor's update; base='sac' with its own actor and LIX layers "
                      "is not available yet")
    if config.target_encoder and config.base != "sac":
        errors.append("target_encoder=True is part of the sac base (DrQ's target critic holds "
                      "its own encoder copy); the ddpg base (DrQ-v2) encodes next_obs with the "
                      "online encoder and has no target encoder: use base='sac' or "
                      "target_encoder=False")
    if config.seer_freeze_frames and config.obs_type != "pixels":
        errors.append("seer_freeze_frames freezes a pixel encoder; state observations have "
                      "none to freeze (use obs_type='pixels' or seer_freeze_frames=0)")
    if config.seer_freeze_frames and config.trunk == "none":
        errors.append("seer_freeze_frames stores the trunks' outputs; trunk='none' has no "
                      "trunk (use trunk='layernorm' or seer_freeze_frames=0)")
    if config.encoder == "flare" and config.frame_stack < 2:
        errors.append("encoder='flare' needs frame_stack >= 2 (it encodes frame differences)")
    return errors


def _routine_errors(config: Config) -> list[str]:
    """What policy_space='routine' (agents/routines.py) does not take."""
    if config.policy_space != "routine":
        return []
    errors = []
    if config.actor != "auto":
        errors.append(f"policy_space='routine' brings its own actor (the routine actor); "
                      f"set actor='auto', got {config.actor!r}")
    if config.nstep != 1:
        errors.append(f"policy_space='routine' needs nstep=1 (its prefixes give the k-step "
                      f"returns), got nstep={config.nstep}")
    if config.critic == "gpl_quantile":
        errors.append("policy_space='routine' takes critic='twin' or 'gpl', got "
                      "critic='gpl_quantile'")
    if config.replay != "host":
        errors.append("policy_space='routine' samples windows from the host replay "
                      "(replay='host')")
    if config.routine_warmup_updates < 1:
        errors.append(f"routine_warmup_updates={config.routine_warmup_updates} must be >= 1")
    if config.routine_len < 1 or config.routine_dim < 1:
        errors.append("routine_len and routine_dim must be >= 1")
    elif config.routine_dec_embed % config.routine_len:
        errors.append(f"routine_dec_embed={config.routine_dec_embed} must be a multiple of "
                      f"routine_len={config.routine_len} (one slice per position)")
    if config.routine_step_order == "per_critic" and (
            config.obs_type != "state" or config.trunk != "none" or config.critic != "twin"):
        errors.append("routine_step_order='per_critic' is the released state networks' order: "
                      "it needs obs_type='state', trunk='none' (no parameters the critics "
                      "share) and critic='twin'")
    return errors


def _attention_errors(config: Config) -> list[str]:
    """What encoder='attention' refuses: LIX layers (it has no conv feature maps), patches
    larger than the image, top K above the tokens, the exact kernel on many tokens."""
    if config.encoder != "attention" or config.obs_type != "pixels" or config.ia_patch < 1 \
            or config.ia_stride < 1:
        return []
    errors = []
    if config.lix:
        errors.append("lix=True needs conv feature maps; encoder='attention' has none (use "
                      "encoder='conv' or lix=False)")
    if config.ia_patch > config.image_size:
        errors.append(f"ia_patch={config.ia_patch} is larger than image_size="
                      f"{config.image_size}")
        return errors
    tokens = num_tokens(config.image_size, config.ia_patch, config.ia_stride)
    if config.ia_top_k > tokens:
        errors.append(f"ia_top_k={config.ia_top_k} is more than the {tokens} patch tokens of "
                      f"{config.image_size}px images (ia_patch={config.ia_patch}, "
                      f"ia_stride={config.ia_stride})")
    if config.ia_kernel == "exact" and tokens > IA_EXACT_MAX_TOKENS:
        errors.append(f"ia_kernel='exact' builds a [N, N] matrix per image and is limited to "
                      f"N <= {IA_EXACT_MAX_TOKENS} tokens (48px at ia_patch=1); these images "
                      f"have N = {tokens}: use a random-feature kernel (favor_pos, favor_hyp, "
                      "trig, hybrid), larger patches or smaller images")
    return errors


def compose_config(preset: str, task: str | None = None, task_group: str | None = None,
                   **overrides: Any) -> Config:
    """Defaults <- preset <- task overrides <- user overrides, unchecked (`validate` lists
    its problems). An unknown preset adds nothing (its name is the caller's to report)."""
    check_field_names(overrides)
    values = dict(PRESETS.get(preset, {}))
    if task is not None and preset in PRESETS:
        values.update(task_overrides(preset, task, task_group))
    values.update(overrides)
    if values.get("obs_type") == "state" and "aug" not in overrides:
        values["aug"] = "none"
    if preset in PRESETS and PRESETS[preset].get("policy_space") == "routine":
        values.update(released_routine_state_networks(values, overrides))
    return Config(**values)


def released_routine_state_networks(values: Mapping[str, Any],
                                   overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The routine presets' changes from state that `overrides` leave open: the released
    networks (ROUTINE_RELEASED_STATE_NETWORKS) and, with the twin critic, the per-critic
    step order. Empty on pixels."""
    if values.get("obs_type") != "state":
        return {}
    changes = {field: value for field, value in ROUTINE_RELEASED_STATE_NETWORKS.items()
               if field not in overrides}
    trunk = changes.get("trunk", values.get("trunk"))
    if ("routine_step_order" not in overrides and trunk == "none"
            and values.get("critic", "twin") == "twin"):
        changes["routine_step_order"] = "per_critic"
    return changes


def build_config(preset: str, task: str | None = None, task_group: str | None = None,
                 **overrides: Any) -> Config:
    """Defaults <- preset <- task overrides <- user overrides; ValueError if invalid."""
    if preset not in PRESETS:
        raise ValueError(f"unknown agent {preset!r}; choose one of: {', '.join(PRESETS)}")
    config = compose_config(preset, task, task_group, **overrides)
    errors = validate(config)
    if errors:
        raise ValueError("invalid config: " + "; ".join(errors))
    return config

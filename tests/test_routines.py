"""Routines (agents/routine_losses.py, replay/windows.py) against numpy references written
from the spec (/work/shared/specs/routines.md): explicit loops, hand-computed values and
Monte Carlo frequencies."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixelzoo.agents import routine_losses as rl

L = 4


def _rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- encoder
def test_prefix_encode_equals_explicit_loop():
    rng = _rng(1)
    batch, action_dim, he, hj, dz = 3, 2, 5, 6, 3
    actions = rng.uniform(-1, 1, (batch, L, action_dim))
    E, e = rng.normal(size=(action_dim, he)), rng.normal(size=he)
    W, b = rng.normal(size=(L, he, hj)) * 0.3, rng.normal(size=(L, hj)) * 0.3
    V, c = rng.normal(size=(hj, dz)) * 0.3, rng.normal(size=dz)
    got = rl.prefix_encode(*(jnp.asarray(x, jnp.float32) for x in (actions, E, e, W, b, V, c)))
    for row in range(batch):
        for j in range(L):
            g = sum(W[k].T @ (E.T @ actions[row, k] + e) + b[k] for k in range(j + 1))
            np.testing.assert_allclose(got[row, j], np.tanh(V.T @ g + c), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- lengths
def test_length_probabilities_by_hand():
    probs = rl.length_probabilities(jnp.array([0.2, 0.5, 0.1, 0.7]))
    np.testing.assert_allclose(probs, [0.2, 0.4, 0.04, 0.36], atol=1e-6)


def test_sample_length_frequencies_match_the_spec():
    count = 100_000
    stop = jnp.broadcast_to(jnp.array([0.2, 0.5, 0.1, 0.0]), (count, L))
    lengths = np.asarray(rl.sample_length(stop, jax.random.key(0)))
    assert lengths.min() >= 1 and lengths.max() <= L
    expected = np.array([0.2, 0.4, 0.04, 0.36])
    frequency = np.bincount(lengths, minlength=L + 1)[1:] / count
    standard_error = np.sqrt(expected * (1 - expected) / count)
    assert np.all(np.abs(frequency - expected) < 4 * standard_error), frequency


def test_prefix_mask_of_length():
    np.testing.assert_array_equal(rl.prefix_mask_of_length(jnp.array([1, 3, 4]), L),
                                  [[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])


# ----------------------------------------------------------------------------- critic
def _np_prefix_targets(rewards, discounts, next_values, gamma):
    batch, length = rewards.shape
    out = np.zeros((batch, length))
    for row in range(batch):
        for k in range(1, length + 1):
            ret = sum(gamma ** i * rewards[row, i] for i in range(k))
            out[row, k - 1] = ret + gamma ** k * discounts[row, k - 1] * next_values[row, k - 1]
    return out


def test_prefix_td_targets_equal_numpy_loop():
    rng = _rng(2)
    rewards = rng.normal(size=(5, L))
    discounts = (rng.uniform(size=(5, L)) > 0.3).astype(np.float64)
    next_values = rng.normal(size=(5, L)) * 10
    got = rl.prefix_td_targets(*(jnp.asarray(x, jnp.float32)
                                 for x in (rewards, discounts, next_values)), 0.9)
    np.testing.assert_allclose(got, _np_prefix_targets(rewards, discounts, next_values, 0.9),
                               rtol=1e-5, atol=1e-5)


def test_prefix_td_targets_by_hand():
    got = rl.prefix_td_targets(jnp.array([[1.0, 2.0, 3.0, 4.0]]),
                               jnp.array([[1.0, 1.0, 0.0, 1.0]]),
                               jnp.array([[10.0, 20.0, 30.0, 40.0]]), 0.5)
    # k=1: 1 + .5*10; k=2: 1 + 1 + .25*20; k=3: 2 + .75 + 0 (terminal); k=4: 2.75 + .5 + 40/16
    np.testing.assert_allclose(got[0], [6.0, 7.0, 2.75, 5.75], rtol=1e-6)


def test_prefix_td_loss_counts_masked_entries():
    q = jnp.array([[[1.0, 2.0]], [[3.0, 0.0]]])          # [N=2, B=1, L=2]
    targets, mask = jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 0.0]])
    # critic 1: 0.5 * (1 + 0) / 2; critic 2: 0.5 * (9 + 0) / 2
    assert float(rl.prefix_td_loss(q, targets, mask)) == pytest.approx(0.25 + 2.25)


# ----------------------------------------------------------------------------- J_lc
def test_length_consistency_targets_and_mask():
    targets, mask = rl.length_consistency_targets(3)
    np.testing.assert_array_equal(targets, np.eye(3))
    np.testing.assert_array_equal(mask, [[1, 0, 0], [1, 1, 0], [1, 1, 1]])


def test_length_consistency_loss_equals_numpy_bce():
    rng = _rng(3)
    logits = rng.normal(size=(4, L, L)) * 2
    prefix_mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], float)
    total, count = 0.0, 0
    for row in range(4):
        for k in range(L):                                 # prefix of k + 1 actions
            if not prefix_mask[row, k]:
                continue
            for i in range(k + 1):
                p = 1 / (1 + np.exp(-logits[row, k, i]))
                total += -np.log(p) if i == k else -np.log(1 - p)
                count += 1
    got = rl.length_consistency_loss(jnp.asarray(logits, jnp.float32),
                                     jnp.asarray(prefix_mask, jnp.float32))
    assert float(got) == pytest.approx(total / count, rel=1e-5)


# ----------------------------------------------------------------------------- entropy
def test_routine_log_prob_and_per_action_mean():
    rng = _rng(4)
    log_probs = rng.normal(size=(3, L))
    lengths = np.array([1, 4, 2])
    gamma = 0.9
    expected = [sum(gamma ** i * log_probs[b, i] for i in range(lengths[b])) for b in range(3)]
    got = rl.routine_log_prob(jnp.asarray(log_probs, jnp.float32), jnp.asarray(lengths), gamma)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    mean = sum(log_probs[b, :lengths[b]].sum() for b in range(3)) / lengths.sum()
    got_mean = rl.per_action_mean_log_prob(jnp.asarray(log_probs, jnp.float32),
                                           jnp.asarray(lengths))
    assert float(got_mean) == pytest.approx(mean, rel=1e-5)


def test_routine_temperature_loss_gradient_in_log_alpha():
    grad = jax.grad(rl.routine_temperature_loss)(jnp.asarray(0.3), jnp.asarray(-1.5), -2.0)
    assert float(grad) == pytest.approx(3.5)               # -(l + target) = -(-3.5)
    assert float(rl.routine_temperature_loss(jnp.asarray(0.3), jnp.asarray(-1.5), -2.0)) \
        == pytest.approx(1.05)


def test_many_to_one_loss_and_decoder_log_std():
    assert float(rl.many_to_one_loss(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, -1.0]]))) == 1.0
    np.testing.assert_allclose(rl.decoder_log_std(jnp.array([-50.0, 0.0, 50.0])),
                               [-10.0, -4.0, 2.0], atol=1e-5)


# ----------------------------------------------------------------------------- windows
def _filled_buffer(stream, capacity, obs_dim=2, pixels=False):
    """A one-step ReplayBuffer fed `stream` (tests/test_replay_transitions.random_stream);
    timestep g's observation and action are filled with g (pixels: g % 251 per frame)."""
    import dm_env
    from dm_env import specs
    from pixelzoo.replay import ReplayBuffer
    if pixels:
        obs_spec = specs.Array((6, 6, 6), np.uint8)
    else:
        obs_spec = specs.Array((obs_dim,), np.float32)
    buffer = ReplayBuffer(obs_spec, specs.Array((1,), np.float32), capacity, nstep=1)
    for g, (_, position, reward, discount) in enumerate(stream):
        obs = np.full(obs_spec.shape, g % 251 if pixels else g, obs_spec.dtype)
        last = g + 1 < len(stream) and stream[g + 1][1] == 0 and position > 0
        if position == 0:
            buffer.add(dm_env.restart(obs))
        else:
            step_type = dm_env.StepType.LAST if last else dm_env.StepType.MID
            buffer.add(dm_env.TimeStep(step_type, reward, discount, obs),
                       np.array([g], np.float32))
    return buffer


@pytest.mark.parametrize("capacity", [500, 37])
def test_windows_equal_brute_force_over_episodes(capacity):
    from pixelzoo.replay import windows
    from tests.test_replay_transitions import random_stream
    stream = random_stream(np.random.default_rng(capacity), 300, max_length=7)
    buffer = _filled_buffer(stream, capacity)
    starts = buffer.sampleable_indices()
    got = windows.gather_windows(buffer.storage_arrays(), starts, buffer.num_added,
                                 buffer.layout, L, np)
    num_added = len(stream)
    for row, t in enumerate(starts):
        want_mask = []
        for k in range(1, L + 1):
            valid = all(t + j < num_added and stream[t + j][0] == stream[t][0]
                        for j in range(1, k + 1))
            want_mask.append(float(valid))
            if valid:                                      # transition k-1 of the window
                assert got.actions[row, k - 1, 0] == t + k
                assert got.rewards[row, k - 1] == stream[t + k][2]
                assert got.discounts[row, k - 1] == stream[t + k][3]
                assert np.all(got.next_obs[row, k - 1] == t + k)
        assert got.mask[row].tolist() == want_mask, t
        assert np.all(got.obs[row] == t)
    masks = got.mask.tolist()
    assert [1.0, 0.0, 0.0, 0.0] in masks and [1.0] * L in masks and [1.0, 1.0, 0.0, 0.0] in masks
    on_device = jax.jit(lambda s: windows.gather_windows(
        jax.tree.map(jnp.asarray, buffer.storage_arrays()), s, buffer.num_added,
        buffer.layout, L, jnp))(jnp.asarray(starts))
    for name in windows.Windows._fields:
        np.testing.assert_array_equal(getattr(on_device, name), getattr(got, name))


def test_pixel_windows_column_j_is_the_one_step_transition_at_t_plus_j():
    from pixelzoo.replay import transitions, windows
    from tests.test_replay_transitions import random_stream
    stream = random_stream(np.random.default_rng(5), 120, max_length=8)
    buffer = _filled_buffer(stream, 50, pixels=True)
    starts = buffer.sampleable_indices()
    got = windows.gather_windows(buffer.storage_arrays(), starts, buffer.num_added,
                                 buffer.layout, L, np)
    for j in range(L):
        rows = np.flatnonzero(got.mask[:, j])
        step = transitions.gather_transitions(buffer.storage_arrays(), starts[rows] + j,
                                              buffer.layout, np)
        np.testing.assert_array_equal(got.next_obs[rows, j], step.next_obs)
        np.testing.assert_array_equal(got.actions[rows, j], step.action)
        np.testing.assert_array_equal(got.rewards[rows, j], step.reward)


def test_released_mask_sets_row_zero_and_drops_first_timesteps():
    from pixelzoo.replay import windows
    from tests.test_replay_transitions import random_stream
    stream = random_stream(np.random.default_rng(7), 200, max_length=6)
    buffer = _filled_buffer(stream, 300)
    starts = buffer.sampleable_indices()
    args = (buffer.storage_arrays()["episode_positions"], buffer.num_added, buffer.layout, L, np)
    intended = windows.prefix_mask(starts, *args)
    released = windows.prefix_mask(starts, *args, mask="released")
    first = np.array([stream[t][1] == 0 for t in starts])
    assert released[0].tolist() == [1.0] * L                   # row 0 never masked
    np.testing.assert_array_equal(released[1:, 0], (~first[1:]).astype(np.float32))
    np.testing.assert_array_equal(released[1:, 1:], intended[1:, 1:])
    assert intended[:, 0].min() == 1.0 and first[1:].any()
    reordered = np.concatenate([starts[first][:1], starts[~first]])   # a first start in row 0
    assert windows.prefix_mask(reordered, *args, mask="released")[0].tolist() == [1.0] * L
    with pytest.raises(ValueError, match="mask must be one of"):
        windows.prefix_mask(starts, *args, mask="row0")


def test_sample_windows_needs_a_one_step_replay():
    from dm_env import specs
    from pixelzoo.replay import ReplayBuffer, windows
    buffer = ReplayBuffer(specs.Array((2,), np.float32), specs.Array((1,), np.float32), 10,
                          nstep=3)
    with pytest.raises(ValueError, match="nstep=1"):
        windows.sample_windows(buffer, 4, L, 0)


# ----------------------------------------------------------------------------- agents
def _specs(obs_dim=5, action_dim=2):
    from dm_env import specs
    return (specs.Array((obs_dim,), np.float32),
            specs.BoundedArray((action_dim,), np.float32, -1.0, 1.0))


def _windows(batch=6, obs_dim=5, action_dim=2, seed=0, mask=None):
    from pixelzoo.replay.windows import Windows
    rng = _rng(seed)
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return Windows(obs=f32(rng.normal(size=(batch, obs_dim))),
                   actions=f32(rng.uniform(-1, 1, (batch, L, action_dim))),
                   rewards=f32(rng.normal(size=(batch, L))), discounts=f32(np.ones((batch, L))),
                   next_obs=f32(rng.normal(size=(batch, L, obs_dim))),
                   mask=f32(np.ones((batch, L)) if mask is None else mask))


def test_presets_recipes_and_config_errors():
    from pixelzoo import agents
    for name, base in (("rtsac", "sac"), ("rttd3", "ddpg")):
        config = agents.build_config(name, task="cheetah_run")
        assert (config.base, config.policy_space, config.routine_dim, config.routine_len) \
            == (base, "routine", 24, 4)
        assert (config.nstep, config.action_repeat, config.obs_type, config.lr, config.tau,
                config.actor_update_every, config.num_seed_frames) \
            == (1, 1, "state", 1e-3, 0.005, 2, 1000)
        # From state, the released networks and step order, no augmentation; on pixels,
        # pixelzoo's networks and DrQ-v2's random shift.
        assert (config.trunk, config.mlp_init_gain, config.routine_step_order, config.aug) \
            == ("none", np.sqrt(2), "per_critic", "none")
        pixels = agents.build_config(name, obs_type="pixels")
        assert (pixels.trunk, pixels.mlp_init_gain, pixels.routine_step_order, pixels.aug) \
            == ("layernorm", 1.0, "joint", "shift")
    # The per-critic order exists for the twin critic without a trunk only; what a user sets
    # is kept.
    gpl = agents.build_config("rttd3", critic="gpl")
    assert (gpl.trunk, gpl.routine_step_order) == ("none", "joint")
    trunk = agents.build_config("rtsac", trunk="layernorm")
    assert (trunk.trunk, trunk.mlp_init_gain, trunk.routine_step_order) \
        == ("layernorm", np.sqrt(2), "joint")
    joint = agents.build_config("rtsac", routine_step_order="joint", mlp_init_gain=1.0)
    assert (joint.trunk, joint.mlp_init_gain, joint.routine_step_order) == ("none", 1.0, "joint")
    assert agents.build_config("rtsac", task="cartpole_swingup").routine_dim == 4
    assert agents.build_config("rtsac", task="fish_swim").routine_dim == 20
    with pytest.raises(ValueError, match="needs nstep=1"):
        agents.build_config("rtsac", nstep=3)
    with pytest.raises(ValueError, match="brings its own actor"):
        agents.build_config("rtsac", actor="tanh_gaussian")
    with pytest.raises(ValueError, match="multiple of routine_len"):
        agents.build_config("rttd3", routine_len=3)
    with pytest.raises(ValueError, match="policy_space"):
        agents.build_config("rtsac", policy_space="plans")
    with pytest.raises(ValueError, match="takes critic='twin' or 'gpl'"):
        agents.build_config("rtsac", critic="gpl_quantile")
    # SEER composes with routines from pixels (tests/test_seer.py), not from state.
    assert agents.build_config("rttd3", obs_type="pixels", aug="shift",
                               seer_freeze_frames=1000).seer_freeze_frames == 1000
    with pytest.raises(ValueError, match="state observations have none to freeze"):
        agents.build_config("rtsac", seer_freeze_frames=1000)


@pytest.fixture(scope="module")
def rttd3_agent():
    """A small Routine TD3 agent (routine_dim 8) and its initial state."""
    from pixelzoo import agents
    agent = agents.make("rttd3", *_specs(), hidden_dim=16)
    return agent, jax.jit(agent.init)(jax.random.key(0))


def test_policy_encode_matches_numpy_and_autoencode_keeps_prefix_n(rttd3_agent):
    from pixelzoo.agents import routines
    agent, state = rttd3_agent
    module = routines.build_policy(agent.config, 2, False, "tanh")
    params = state.params["actor"]
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params["params"])
    actions = _rng(5).uniform(-1, 1, (3, L, 2))
    encode = jax.jit(lambda a: module.apply(params, a, method=module.encode))
    got = encode(jnp.asarray(actions, jnp.float32))
    for row in range(3):
        g = 0
        for k in range(L):
            e = actions[row, k] @ p["embed_kernel"] + p["embed_bias"]
            g = g + e @ p["position_kernels"][k] + p["position_biases"][k]
            want = np.tanh(g @ p["out_kernel"] + p["out_bias"])
            np.testing.assert_allclose(got[row, k], want, rtol=1e-4, atol=1e-5)
    z = jnp.asarray(_rng(6).uniform(-1, 1, (64, 8)), jnp.float32)
    reencoded, decoded, _, length = jax.jit(lambda z: routines.autoencode(
        module, params, z, jax.random.key(1)))(z)
    prefixes = encode(decoded)
    np.testing.assert_allclose(reencoded, prefixes[np.arange(64), np.asarray(length) - 1])
    assert set(np.asarray(length).tolist()) == {1, 2, 3, 4}


def test_released_state_networks_read_the_state_directly():
    """trunk='none', mlp_init_gain=sqrt(2): the released routine actor tanh(MLP(s)) and
    critics MLP([s, z]), every kernel orthogonal of gain sqrt(2) (the spec's section 3)."""
    from pixelzoo import agents
    agent = agents.make("rtsac", *_specs(), hidden_dim=16, trunk="none",
                        mlp_init_gain=float(np.sqrt(2)))
    state = jax.jit(agent.init)(jax.random.key(0))
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), state.params)
    policy = p["actor"]["params"]["policy"]
    assert "Trunk_0" not in policy and "Trunk_0" not in p["critic"]["params"]
    mlp = policy["MLP_0"]
    kernels = [mlp[f"Dense_{i}"]["kernel"] for i in range(3)]              # 5-16-16-Dz
    assert [k.shape for k in kernels] == [(5, 16), (16, 16), (16, 8)]
    for k in kernels:
        small = min(k.shape)
        gram = k @ k.T if k.shape[0] == small else k.T @ k
        np.testing.assert_allclose(gram, 2 * np.eye(small), atol=1e-4)
    for head in p["critic"]["params"]["q_heads"]["Dense_0"]["kernel"]:    # [2, 5 + Dz, 16]
        np.testing.assert_allclose(head @ head.T, 2 * np.eye(13), atol=1e-4)
    obs = _rng(3).normal(size=(7, 5))
    hidden = obs
    for i in range(2):
        hidden = np.maximum(hidden @ kernels[i] + mlp[f"Dense_{i}"]["bias"], 0)
    want = np.tanh(hidden @ kernels[2] + mlp["Dense_2"]["bias"])
    setup = agents.make_setup(agent.config, agent.obs_spec, 2)
    got = setup.nets.actor.apply(state.params["actor"], jnp.asarray(obs, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,overrides", [
    ("rtsac", {}), ("rttd3", dict(critic="gpl", mlp="d2rl")),
    ("rtsac", dict(trunk="none", mlp_init_gain=float(np.sqrt(2))))])
def test_update_routes_gradients_and_ignores_masked_prefixes(name, overrides):
    from pixelzoo import agents
    agent = agents.make(name, *_specs(), hidden_dim=16, batch_size=6, **overrides)
    update = jax.jit(agent.update)
    state = jax.jit(agent.init)(jax.random.key(0))
    parts = lambda s, names: [s.params["actor"]["params"][n] for n in names]
    policy = lambda s: parts(s, ["policy"])
    ae = lambda s: parts(s, ["decoder_out", "position_kernels", "embed_kernel"])
    changed = lambda a, b: any(not np.allclose(x, y) for x, y in
                               zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    first, metrics = update(state, _windows(), jax.random.key(1))      # update 0: actor step
    assert metrics["actor_updated"] == 1 and changed(policy(state), policy(first))
    assert changed(ae(state), ae(first))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    second, metrics = update(first, _windows(seed=1), jax.random.key(2))   # no actor step
    assert metrics["actor_updated"] == 0 and np.isnan(metrics["actor_loss"])
    assert not changed(policy(first), policy(second)) and changed(ae(first), ae(second))
    # Masked prefixes' rewards change nothing: the same critic loss and new parameters.
    mask = np.array([[1, 1, 0, 0]] * 6, np.float32)
    windows = _windows(seed=2, mask=mask)
    other = windows._replace(rewards=windows.rewards.at[:, 2:].set(1e4))
    a, metrics_a = update(second, windows, jax.random.key(3))
    b, metrics_b = update(second, other, jax.random.key(3))
    assert float(metrics_a["critic_loss"]) == float(metrics_b["critic_loss"])
    assert not changed(a.params, b.params)
    c, metrics_c = update(second, windows._replace(mask=jnp.ones((6, L))), jax.random.key(3))
    assert float(metrics_c["critic_loss"]) != float(metrics_a["critic_loss"])


def test_acting_queue_pops_each_routine_and_counts_queries(rttd3_agent):
    from pixelzoo import agents
    from pixelzoo.agents import routines
    agent, state = rttd3_agent
    setup = agents.make_setup(agent.config, agent.obs_spec, 2)
    act = jax.jit(agent.act_and_update)
    obs = jnp.asarray(_rng(7).normal(size=(1, 5)), jnp.float32)
    query = jax.jit(lambda params, key: routines.query_routine(
        agent.config, setup.nets.actor, params, obs, key, False))
    expected_queue, queries, lengths = [], 0, []
    for step in range(24):
        key = jax.random.key(100 + step)
        if not expected_queue:                          # the agent must query now
            queued, length = query(state.params["actor"], key)
            expected_queue = list(np.asarray(queued)[:int(length)])
            queries += 1
            lengths.append(int(length))
        action, acting = act(state, obs, key)
        np.testing.assert_allclose(action[0], expected_queue.pop(0), rtol=1e-5, atol=1e-6)
        state = state.replace(acting=acting)
        train = acting["train"]
        assert int(train["queries"]) == queries and int(train["steps"]) == step + 1
    assert len(set(lengths)) > 1 and queries < 24
    assert int(state.acting["eval"]["steps"]) == 0          # evaluation has its own queue
    cleared = agent.reset_acting(state, False).acting
    assert int(cleared["train"]["remaining"]) == 0 and int(cleared["train"]["queries"]) == 0


def test_per_critic_order_steps_each_critic_with_its_own_adam_then_the_routine_parts():
    """routine_step_order='per_critic' (the released order) against a reference that keeps
    a separate Adam per critic head and one Adam over the prefix encoder and decoder only:
    for each critic, fresh targets, its TD step, then the AE step on its TD loss + J_lc."""
    import optax
    from pixelzoo import agents
    from pixelzoo.agents import routine_update, routines
    agent = agents.make("rtsac", *_specs(), hidden_dim=16, batch_size=6, trunk="none",
                        routine_step_order="per_critic")
    config, setup = agent.config, agents.make_setup(agent.config, agent.obs_spec, 2)
    nets = setup.nets
    # update_step 1: no actor or target step, so the update is the critic and AE phase.
    state = jax.jit(agent.init)(jax.random.key(0)).replace(update_step=jnp.int32(1))
    ae_names = routines.ENCODER + routines.DECODER
    heads = lambda critic, c: jax.tree.map(lambda x: x[c], critic["params"]["q_heads"])
    ae_part = lambda actor: {n: actor["params"][n] for n in ae_names}
    head_adams = [optax.adam(config.lr).init(heads(state.params["critic"], c)) for c in (0, 1)]
    ae_adam = optax.adam(config.routine_lr).init(ae_part(state.params["actor"]))

    def with_head(critic, c, head):
        q_heads = jax.tree.map(lambda full, h: full.at[c].set(h),
                               critic["params"]["q_heads"], head)
        return {"params": {**critic["params"], "q_heads": q_heads}}

    def with_ae(actor, part):
        return {"params": {**actor["params"], **part}}

    def td_and_lc(critic, actor, c, windows, targets):
        prefixes = nets.actor.apply(actor, windows.actions, method="encode")      # [B, L, Dz]
        flat = prefixes.reshape(-1, prefixes.shape[-1])
        q = nets.critic.apply(critic, jnp.repeat(windows.obs, L, axis=0), flat)[c]
        td = 0.5 * jnp.mean(windows.mask * (q.reshape(6, L) - targets) ** 2)
        stops = nets.actor.apply(actor, flat, method="decode")[2].reshape(6, L, L)
        return td, rl.length_consistency_loss(stops, windows.mask)

    params, target_params = state.params, state.target_params
    for step, windows in enumerate([_windows(seed=7), _windows(seed=8)]):
        key = jax.random.key(20 + step)
        key_target = jax.random.split(key, 4)[2]
        for c, key_c in enumerate(jax.random.split(key_target, 2)):
            values, _ = routine_update.next_routine_values(setup, params, target_params,
                                                           windows.next_obs, key_c)
            targets = rl.prefix_td_targets(windows.rewards, windows.discounts, values,
                                           config.discount)
            grad = jax.grad(lambda h: td_and_lc(with_head(params["critic"], c, h),
                                                params["actor"], c, windows, targets)[0])(
                heads(params["critic"], c))
            updates, head_adams[c] = optax.adam(config.lr).update(grad, head_adams[c])
            params = {**params, "critic": with_head(
                params["critic"], c, optax.apply_updates(heads(params["critic"], c), updates))}
            grad = jax.grad(lambda part: sum(td_and_lc(
                params["critic"], with_ae(params["actor"], part), c, windows, targets)))(
                ae_part(params["actor"]))
            updates, ae_adam = optax.adam(config.routine_lr).update(grad, ae_adam)
            params = {**params, "actor": with_ae(params["actor"], optax.apply_updates(
                ae_part(params["actor"]), updates))}
        state, metrics = jax.jit(agent.update)(state, windows, key)
        assert metrics["actor_updated"] == 0
        jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5,
                                                                  atol=1e-6),
                     (state.params["critic"], state.params["actor"]),
                     (params["critic"], params["actor"]))
        state = state.replace(update_step=jnp.int32(1))
    with pytest.raises(ValueError, match="needs obs_type='state', trunk='none'"):
        agents.build_config("rtsac", routine_step_order="per_critic", trunk="layernorm")

"""Replay against an independent brute-force reference: values, not shapes."""
import dataclasses

import dm_env
import numpy as np
import pytest
from dm_env import specs

from pixelzoo import replay

FRAME = (6, 6, 3)
ACTION_DIM = 2


# ----------------------------------------------------------------------------- fake env
class FakeEnv:
    """Emits episodes like envs does: random uint8 frames stacked on channels, oldest
    first, the stack filled with the first frame on reset; or float32 state vectors."""

    def __init__(self, seed: int, frame_stack: int = 3, pixels: bool = True,
                 state_dim: int = 4):
        self.rng = np.random.default_rng(seed)
        self.frame_stack = frame_stack
        self.pixels = pixels
        self.state_dim = state_dim

    def obs_spec(self) -> specs.Array:
        if self.pixels:
            return specs.Array(FRAME[:2] + (3 * self.frame_stack,), np.uint8, "pixels")
        return specs.Array((self.state_dim,), np.float32, "state")

    def action_spec(self) -> specs.BoundedArray:
        return specs.BoundedArray((ACTION_DIM,), np.float64, -1.0, 1.0)

    def _observation(self):
        if self.pixels:
            return self.rng.integers(0, 256, FRAME, dtype=np.uint8)
        return self.rng.normal(size=self.state_dim).astype(np.float32)

    def episode(self, length: int, end: str, mid_discounts: bool = True):
        """[(timestep, action or None)]: FIRST then `length` more timesteps.

        end: 'truncate' (LAST, discount 1), 'terminate' (LAST, discount 0) or 'cut'
        (the episode just stops: no LAST). Rewards are multiples of 1/4 and discounts
        1 or 1/2, so n-step sums with gamma 1/2 are exact in float32.
        """
        frame = self._observation()
        stack = [frame] * self.frame_stack
        out = [(dm_env.restart(self._stacked(stack)), None)]
        for i in range(length):
            frame = self._observation()
            stack = stack[1:] + [frame]
            obs = self._stacked(stack)
            action = self.rng.uniform(-1, 1, ACTION_DIM)
            reward = float(self.rng.integers(-8, 9)) / 4
            if i == length - 1 and end == "truncate":
                ts = dm_env.truncation(reward, obs)
            elif i == length - 1 and end == "terminate":
                ts = dm_env.termination(reward, obs)
            else:
                discount = float(self.rng.choice([1.0, 0.5])) if mid_discounts else 1.0
                ts = dm_env.transition(reward, obs, discount)
            out.append((ts, action))
        return out

    def _stacked(self, stack):
        return np.concatenate(stack, axis=-1) if self.pixels else stack[-1]

    def random_episode(self, max_length: int = 8):
        end = str(self.rng.choice(["truncate", "terminate", "cut"]))
        length = int(self.rng.integers(0 if end == "cut" else 1, max_length + 1))
        return self.episode(length, end)


# ----------------------------------------------------------------------------- reference
@dataclasses.dataclass
class Reference:
    """Every episode ever added, whole; transitions enumerated by direct formulas."""

    capacity: int
    nstep: int
    gamma: float
    frame_stack: int
    episodes: list = dataclasses.field(default_factory=list)  # [[(obs, action, r, d)]]
    starts: list = dataclasses.field(default_factory=list)  # global index of each FIRST
    num_added: int = 0

    def add(self, timestep, action):
        if timestep.first():
            self.episodes.append([])
            self.starts.append(self.num_added)
        reward = 0.0 if timestep.first() else timestep.reward
        discount = 1.0 if timestep.first() else timestep.discount
        self.episodes[-1].append((timestep.observation, action, reward, discount))
        self.num_added += 1

    def transitions(self) -> dict:
        """{global start: (episode, t, obs, action, reward, discount, next_obs)}."""
        oldest_kept = self.num_added - self.capacity
        n, out = self.nstep, {}
        for e, (start, steps) in enumerate(zip(self.starts, self.episodes)):
            for t in range(len(steps) - n):
                # Earliest timestep whose frame is in the obs stack.
                if start + max(0, t - self.frame_stack + 1) < oldest_kept:
                    continue
                rewards = [steps[t + 1 + i][2] for i in range(n)]
                discounts = [steps[t + 1 + i][3] for i in range(n)]
                ret = sum(self.gamma ** i * np.prod(discounts[:i]) * rewards[i]
                          for i in range(n))
                out[start + t] = (e, t, steps[t][0], steps[t + 1][1], ret,
                                  self.gamma ** n * np.prod(discounts), steps[t + n][0])
        return out


def add_both(buf, ref, episode, check_each=False):
    for timestep, action in episode:
        buf.add(timestep, action)
        ref.add(timestep, action)
        if check_each:
            check_matches(buf, ref)


def check_matches(buf, ref, exact=True):
    expected = ref.transitions()
    got = buf.sampleable_indices()
    assert got.tolist() == sorted(expected)
    assert buf.num_transitions == len(expected)
    assert buf.can_sample == bool(expected)   # the O(1) answer, against brute force
    assert len(buf) == min(ref.num_added, buf.capacity)
    if not expected:
        return
    batch = buf.gather(got)
    rows = [expected[i] for i in got.tolist()]
    np.testing.assert_array_equal(batch.obs, np.stack([r[2] for r in rows]))
    np.testing.assert_array_equal(batch.next_obs, np.stack([r[6] for r in rows]))
    np.testing.assert_array_equal(batch.action,
                                  np.stack([r[3] for r in rows]).astype(np.float32))
    reward = np.array([r[4] for r in rows])
    discount = np.array([r[5] for r in rows])
    if exact:
        np.testing.assert_array_equal(batch.reward, reward.astype(np.float32))
        np.testing.assert_array_equal(batch.discount, discount.astype(np.float32))
    else:
        np.testing.assert_allclose(batch.reward, reward, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(batch.discount, discount, rtol=1e-6)
    assert batch.obs.dtype == buf.state_dict()["observations"].dtype
    assert batch.action.dtype == batch.reward.dtype == batch.discount.dtype == np.float32


def make(env, capacity, nstep, gamma=0.5):
    buf = replay.ReplayBuffer(env.obs_spec(), env.action_spec(), capacity, nstep=nstep,
                              discount=gamma)
    ref = Reference(capacity, nstep, gamma, env.frame_stack if env.pixels else 1)
    return buf, ref


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("nstep,frame_stack", [(3, 3), (1, 3), (2, 1), (3, 2), (5, 3)])
def test_matches_reference_without_wraparound(nstep, frame_stack):
    env = FakeEnv(seed=nstep * 10 + frame_stack, frame_stack=frame_stack)
    buf, ref = make(env, capacity=1000, nstep=nstep)
    assert buf.frame_stack == frame_stack
    for _ in range(12):
        add_both(buf, ref, env.random_episode(), check_each=True)
    assert buf.num_transitions > 0


@pytest.mark.parametrize("nstep,frame_stack,capacity", [(3, 3, 17), (1, 3, 11), (2, 2, 23),
                                                        (3, 1, 9), (4, 3, 30)])
def test_matches_reference_with_wraparound(nstep, frame_stack, capacity):
    env = FakeEnv(seed=capacity, frame_stack=frame_stack)
    buf, ref = make(env, capacity=capacity, nstep=nstep)
    while ref.num_added < 6 * capacity:  # overwrite the ring several times
        add_both(buf, ref, env.random_episode(max_length=12), check_each=True)
    assert buf.num_added == ref.num_added and len(buf) == capacity


def test_long_episode_wraps_inside_itself():
    env = FakeEnv(seed=3)
    buf, ref = make(env, capacity=10, nstep=3)
    add_both(buf, ref, env.episode(40, "truncate"), check_each=True)
    # Mid-episode, the oldest k-1 kept timesteps lack their older frames.
    assert buf.num_transitions == 10 - 3 - 2


def test_episode_start_stack_repeats_first_frame_only():
    env = FakeEnv(seed=4)
    buf, ref = make(env, capacity=100, nstep=1)
    first = env.episode(5, "truncate")
    second = env.episode(5, "terminate")
    add_both(buf, ref, first)
    add_both(buf, ref, second)
    frame0 = second[0][0].observation[..., -3:]
    batch = buf.gather([6])  # timestep 0 of the second episode
    np.testing.assert_array_equal(batch.obs[0], np.concatenate([frame0] * 3, -1))
    frame1 = second[1][0].observation[..., -3:]
    batch = buf.gather([7])  # timestep 1: [first, first, second frame]
    np.testing.assert_array_equal(batch.obs[0],
                                  np.concatenate([frame0, frame0, frame1], -1))
    np.testing.assert_array_equal(batch.next_obs[0], second[2][0].observation)
    check_matches(buf, ref)


def test_nstep_values_by_hand():
    env = FakeEnv(seed=5)
    spec = env.obs_spec()
    obs = np.zeros(spec.shape, np.uint8)
    act = np.zeros(ACTION_DIM)
    for last, expected_discount in [(dm_env.truncation, 0.125), (dm_env.termination, 0.0)]:
        buf = replay.ReplayBuffer(spec, env.action_spec(), 50, nstep=3, discount=0.5)
        buf.add(dm_env.restart(obs))
        buf.add(dm_env.transition(1.0, obs), act)
        buf.add(dm_env.transition(2.0, obs), act)
        buf.add(last(4.0, obs), act)
        batch = buf.gather([0])
        assert batch.reward[0] == 1.0 + 0.5 * 2.0 + 0.25 * 4.0
        assert batch.discount[0] == expected_discount
        assert buf.sampleable_indices().tolist() == [0]
    # An env discount inside the window scales later rewards and the bootstrap.
    buf = replay.ReplayBuffer(spec, env.action_spec(), 50, nstep=2, discount=0.5)
    buf.add(dm_env.restart(obs))
    buf.add(dm_env.transition(1.0, obs, discount=0.25), act)
    buf.add(dm_env.transition(8.0, obs), act)
    batch = buf.gather([0])
    assert batch.reward[0] == 1.0 + 0.5 * 0.25 * 8.0
    assert batch.discount[0] == 0.25 * 0.25


def test_gamma_099_and_mid_discounts():
    env = FakeEnv(seed=6)
    buf, ref = make(env, capacity=60, nstep=3, gamma=0.99)
    for _ in range(20):
        add_both(buf, ref, env.random_episode())
    check_matches(buf, ref, exact=False)


def test_episodes_shorter_than_nstep_give_nothing():
    env = FakeEnv(seed=7)
    buf, ref = make(env, capacity=100, nstep=3)
    for length in (0, 1, 2):
        add_both(buf, ref, env.episode(length, "cut" if length == 0 else "terminate"))
    assert buf.num_transitions == 0
    with pytest.raises(ValueError, match="no transition can be sampled"):
        buf.sample(4, 0)
    add_both(buf, ref, env.episode(3, "truncate"))
    assert buf.sampleable_indices().tolist() == [6]
    check_matches(buf, ref)


def test_state_observations():
    env = FakeEnv(seed=8, pixels=False)
    buf, ref = make(env, capacity=25, nstep=2)
    assert buf.frame_stack == 1
    while ref.num_added < 100:
        add_both(buf, ref, env.random_episode(), check_each=True)
    assert buf.sample(5, 0).obs.dtype == np.float32


# ----------------------------------------------------------------------------- sampling
def filled(seed=9, capacity=40, nstep=3, episodes=15):
    env = FakeEnv(seed=seed)
    buf, ref = make(env, capacity=capacity, nstep=nstep)
    for _ in range(episodes):
        add_both(buf, ref, env.random_episode())
    return env, buf, ref


def test_sample_valid_and_deterministic():
    _, buf, ref = filled()
    expected = ref.transitions()
    by_obs = {expected[i][2].tobytes(): i for i in expected}
    batch = buf.sample(64, 123)
    for i in range(64):  # every sampled row is the reference transition of its obs
        start = by_obs[batch.obs[i].tobytes()]
        np.testing.assert_array_equal(batch.next_obs[i], expected[start][6])
        assert batch.reward[i] == np.float32(expected[start][4])
    again = buf.sample(64, 123)
    for a, b in zip(batch, again):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(123)
    for a, b in zip(batch, buf.sample(64, rng)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(buf.sample(64, rng).obs, batch.obs)  # the generator advanced


def test_sample_is_uniform_over_valid():
    _, buf, _ = filled(capacity=60, episodes=20)
    valid = buf.sampleable_indices()
    by_obs = {buf.gather([i]).obs[0].tobytes(): i for i in valid.tolist()}
    draws = 200 * valid.size
    batch = buf.sample(draws, 0)
    counts = np.bincount([by_obs[o.tobytes()] - valid[0] for o in batch.obs],
                         minlength=valid[-1] - valid[0] + 1)[valid - valid[0]]
    assert counts.sum() == draws
    # Binomial(draws, 1/N): std ~ sqrt(200) ~ 14; 5 std either side.
    assert counts.min() > 200 - 71 and counts.max() < 200 + 71


def test_sample_falls_back_when_few_valid():
    env = FakeEnv(seed=10)
    buf, ref = make(env, capacity=400, nstep=3)
    for _ in range(100):
        add_both(buf, ref, env.episode(2, "truncate"))
    add_both(buf, ref, env.episode(3, "truncate"))  # the only valid transition
    only = buf.sampleable_indices()
    assert only.tolist() == [300]
    batch = buf.sample(16, 0)
    np.testing.assert_array_equal(batch.obs, np.repeat(buf.gather(only).obs, 16, 0))


def test_sample_raises_when_empty():
    env = FakeEnv(seed=11)
    buf, _ = make(env, capacity=10, nstep=3)
    with pytest.raises(ValueError, match="no transition can be sampled"):
        buf.sample(2, 0)


def test_batch_is_a_pytree():
    import jax

    _, buf, _ = filled()
    batch = buf.sample(4, 0)
    assert isinstance(batch, replay.Batch)
    assert len(jax.tree_util.tree_leaves(batch)) == 5
    assert batch.obs.shape == (4,) + FRAME[:2] + (9,)


# ----------------------------------------------------------------------------- checkpoints
def test_state_dict_round_trip():
    env, buf, ref = filled(capacity=30, episodes=20)
    state = {k: np.array(v) for k, v in buf.state_dict().items()}  # as orbax restores it
    assert state["num_added"].shape == () and state["episode_open"].shape == ()
    restored = replay.ReplayBuffer(env.obs_spec(), env.action_spec(), 30, nstep=3,
                                   discount=0.5)
    restored.load_state_dict(state)
    assert restored.num_added == buf.num_added
    for a, b in zip(buf.sample(32, 7), restored.sample(32, 7)):
        np.testing.assert_array_equal(a, b)
    episode = env.episode(7, "cut")
    add_both(restored, ref, episode[:-1])  # continues as the reference does
    check_matches(restored, ref)
    # An open episode survives the round trip: its next MID timestep may follow.
    again = replay.ReplayBuffer(env.obs_spec(), env.action_spec(), 30, nstep=3,
                                discount=0.5)
    again.load_state_dict(restored.state_dict())
    add_both(again, ref, episode[-1:])
    check_matches(again, ref)


def test_load_state_dict_rejects_mismatch():
    env, buf, _ = filled()
    other = replay.ReplayBuffer(env.obs_spec(), env.action_spec(), 41)
    with pytest.raises(ValueError, match="expected .41"):
        other.load_state_dict(buf.state_dict())
    state = dict(buf.state_dict())
    del state["rewards"]
    with pytest.raises(ValueError, match="state keys"):
        buf.load_state_dict(state)
    state = dict(buf.state_dict(), num_added=np.asarray(3, np.int32))
    with pytest.raises(ValueError, match="num_added"):
        buf.load_state_dict(state)


# ----------------------------------------------------------------------------- memory
@pytest.mark.parametrize("action_dim", [6, 21])
def test_bytes_per_transition_at_84px(action_dim):
    obs_spec = specs.Array((84, 84, 9), np.uint8)
    action_spec = specs.BoundedArray((action_dim,), np.float32, -1.0, 1.0)
    buf = replay.ReplayBuffer(obs_spec, action_spec, capacity=1000)
    frame = 84 * 84 * 3
    per_transition = buf.nbytes / buf.capacity
    assert per_transition == frame + 4 * action_dim + 4 + 4 + 4
    assert per_transition <= 1.05 * frame
    # The official buffer keeps the full stack per timestep: 3x the frame.
    assert per_transition < 3 * frame / 2.8


# ----------------------------------------------------------------------------- errors
def test_bad_inputs():
    env = FakeEnv(seed=12)
    buf, _ = make(env, capacity=20, nstep=3)
    episode = env.episode(5, "truncate")
    first, (mid, action) = episode[0][0], episode[1]
    with pytest.raises(ValueError, match="no episode open"):
        buf.add(mid, action)
    with pytest.raises(ValueError, match=r"expected \(6, 6, 9\) uint8, got \(6, 6, 6\)"):
        buf.add(first._replace(observation=first.observation[..., :6]))
    with pytest.raises(ValueError, match="expected .* uint8, got .* float32"):
        buf.add(first._replace(observation=first.observation.astype(np.float32)))
    with pytest.raises(ValueError, match="takes no action"):
        buf.add(first, action)
    buf.add(first)
    with pytest.raises(ValueError, match="needs the action"):
        buf.add(mid)
    with pytest.raises(ValueError, match=r"expected shape \(2,\), got \(3,\)"):
        buf.add(mid, np.zeros(3))
    for ts, action in episode[1:]:
        buf.add(ts, action)
    with pytest.raises(ValueError, match="no episode open"):  # after LAST
        buf.add(mid, action)
    assert buf.num_added == 6
    with pytest.raises(ValueError, match=r"not sampleable now: \[3, 4"):
        buf.gather([0, 3, 4])
    with pytest.raises(ValueError, match="batch_size"):
        buf.sample(0, 0)


def test_bad_construction():
    action_spec = specs.BoundedArray((2,), np.float32, -1.0, 1.0)
    with pytest.raises(ValueError, match="3 channels per frame"):
        replay.ReplayBuffer(specs.Array((6, 6, 8), np.uint8), action_spec, 10)
    with pytest.raises(ValueError, match="expected 3"):
        replay.ReplayBuffer(specs.Array((6, 6, 9), np.uint8), action_spec, 10, frame_stack=2)
    with pytest.raises(ValueError, match="frame_stack 1"):
        replay.ReplayBuffer(specs.Array((5,), np.float32), action_spec, 10, frame_stack=3)
    with pytest.raises(ValueError, match="capacity"):
        replay.ReplayBuffer(specs.Array((5,), np.float32), action_spec, 3, nstep=3)
    with pytest.raises(ValueError, match="nstep"):
        replay.ReplayBuffer(specs.Array((5,), np.float32), action_spec, 10, nstep=0)


def test_first_without_last_starts_new_episode():
    env = FakeEnv(seed=13)
    buf, ref = make(env, capacity=100, nstep=2)
    add_both(buf, ref, env.episode(4, "cut"))
    add_both(buf, ref, env.episode(4, "cut"))  # the first one never saw LAST
    assert buf.sampleable_indices().tolist() == [0, 1, 2, 5, 6, 7]
    check_matches(buf, ref)


def test_unwritten_slot_is_not_read_in_full_ring():
    # With capacity 10: episode A is timesteps 0..9, B starts at 10. At num_added 15,
    # the slot timestep 15 would use still holds timestep 5 (position 5 = 2 + nstep),
    # so only the insertion counter tells that t = 12 has no full window yet.
    env = FakeEnv(seed=14)
    buf, ref = make(env, capacity=10, nstep=3)
    add_both(buf, ref, env.episode(9, "truncate"), check_each=True)
    add_both(buf, ref, env.episode(4, "cut"), check_each=True)
    assert 12 not in buf.sampleable_indices().tolist()
    with pytest.raises(ValueError, match="not sampleable"):
        buf.gather([12])


# ----------------------------------------------------------------------------- device replay
@pytest.mark.parametrize("pixels", [True, False])
def test_device_gather_equals_the_host_batch_for_the_same_indices(pixels):
    """Frames mirrored on the device and gathered inside jit give exactly the host batch,
    across episode boundaries and ring wraparound, before and after more adds."""
    import jax
    from pixelzoo.replay import DeviceReplay, gather
    rng = np.random.default_rng(0)
    if pixels:
        obs_spec = specs.Array((6, 6, 9), np.uint8)
        observe = lambda: rng.integers(0, 256, (6, 6, 9), dtype=np.uint8)
    else:
        obs_spec = specs.Array((4,), np.float32)
        observe = lambda: rng.normal(size=4).astype(np.float32)
    action_spec = specs.BoundedArray((2,), np.float32, -1, 1)
    buffer = replay.ReplayBuffer(obs_spec, action_spec, capacity=40, nstep=3, discount=0.9)
    device = DeviceReplay(buffer)
    jitted_gather = jax.jit(gather, static_argnums=2)

    def add_episode(length: int, discount_at_end: float) -> None:
        buffer.add(dm_env.restart(observe()))
        for t in range(length):
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            if t == length - 1:
                timestep = dm_env.TimeStep(dm_env.StepType.LAST, np.float32(rng.random()),
                                           np.float32(discount_at_end), observe())
            else:
                timestep = dm_env.transition(np.float32(rng.random()), observe(),
                                             np.float32(rng.uniform(0.5, 1)))
            buffer.add(timestep, action)

    for round_, (length, end) in enumerate([(7, 0.0), (12, 1.0), (9, 0.0), (25, 1.0)]):
        add_episode(length, end)
        device.sync()
        starts = buffer.sample_indices(16, rng)
        want = buffer.gather(starts)
        got = jitted_gather(device.arrays, jax.numpy.asarray(starts), device.layout)
        for name, g, w in zip(want._fields, got, want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, err_msg=f"{name} {round_}")
    assert buffer.num_added > buffer.capacity          # the ring wrapped
    for g, w in zip(buffer.sample(16, 5), buffer.gather(buffer.sample_indices(16, 5))):
        np.testing.assert_array_equal(g, w)            # sample = gather(sample_indices)

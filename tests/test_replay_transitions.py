"""replay.transitions, the rules every replay shares, against brute force: plain Python loops
over whole episodes, with numpy and with jax.numpy (as the device replay runs them)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixelzoo.replay import transitions


# ----------------------------------------------------------------------------- episodes
def random_stream(rng, num_timesteps: int, max_length: int = 9):
    """Episodes of timesteps, as a replay receives them: [(episode id, position, reward,
    environment discount)] per global index. Rewards are multiples of 1/4 and discounts 1
    or 1/2 inside an episode; an episode ends in a termination (discount 0), a truncation
    (a time limit: discount 1) or nothing (the next FIRST simply arrives)."""
    stream, episode = [], 0
    while len(stream) < num_timesteps:
        length = int(rng.integers(1, max_length + 1))   # timesteps, the FIRST one included
        end = rng.choice(["terminate", "truncate", "cut"])
        for position in range(length):
            if position == 0:
                reward, discount = 0.0, 1.0              # a FIRST timestep's, as stored
            else:
                reward = float(rng.integers(-8, 9)) / 4
                discount = float(rng.choice([1.0, 0.5]))
            if position == length - 1 and position > 0 and end != "cut":
                discount = 0.0 if end == "terminate" else 1.0
            stream.append((episode, position, reward, discount))
        episode += 1
    return stream[:num_timesteps]


def brute_force_nstep(rewards, discounts, gamma):
    """sum_i gamma^i (prod_{j<i} d_j) r_i and gamma^n prod_j d_j, term by term in float64."""
    total = 0.0
    for i in range(len(rewards)):
        total += gamma ** i * float(np.prod(discounts[:i])) * rewards[i]
    return total, gamma ** len(rewards) * float(np.prod(discounts))


def brute_force_sampleable(stream, start, num_added, capacity, nstep, frame_stack):
    """Whether `start` names a transition: its n successors are added and in its episode,
    and each frame of its stack (walking back, stopping at the episode's FIRST) is stored."""
    oldest = max(num_added - capacity, 0)
    if start < 0 or start + nstep >= num_added:
        return False
    if any(stream[start + j][0] != stream[start][0] for j in range(nstep + 1)):
        return False
    frame = start
    for _ in range(frame_stack - 1):
        if frame > 0 and stream[frame - 1][0] == stream[start][0]:
            frame -= 1
    return frame >= oldest


def ring_of(stream, num_added, capacity):
    """The episode_positions ring after num_added adds."""
    positions = np.zeros(capacity, np.int32)
    for index in range(num_added):
        positions[index % capacity] = stream[index][1]
    return positions


# ----------------------------------------------------------------------------- n-step return
@pytest.mark.parametrize("nstep", [1, 2, 3, 5])
def test_nstep_return_equals_a_brute_force_loop_over_episodes(nstep):
    """Every window of n timesteps after a start inside its episode (terminations,
    truncations, mid-episode discounts), in numpy and in jitted jax.numpy; exact in float32,
    as gamma 1/2, rewards in quarters and discounts in halves are."""
    rng = np.random.default_rng(nstep)
    stream = random_stream(rng, 400)
    gamma = 0.5
    starts = [t for t in range(len(stream) - nstep)
              if stream[t + nstep][0] == stream[t][0]]
    rewards = np.array([[stream[t + 1 + i][2] for i in range(nstep)] for t in starts],
                       np.float32)
    discounts = np.array([[stream[t + 1 + i][3] for i in range(nstep)] for t in starts],
                         np.float32)
    want = np.array([brute_force_nstep(r, d, gamma) for r, d in zip(rewards, discounts)])
    assert (discounts[:, -1] == 0).any() and (want[:, 1] == 0).any()      # terminations
    assert (want[:, 1] == gamma ** nstep).any()                            # bootstrapping
    jitted = jax.jit(lambda r, d: transitions.nstep_return(r, d, gamma, jnp))
    for got in (transitions.nstep_return(rewards, discounts, gamma, np),
                tuple(np.asarray(x) for x in jitted(rewards, discounts))):
        assert got[0].dtype == got[1].dtype == np.float32 and got[0].shape == (len(starts),)
        np.testing.assert_array_equal(got[0], want[:, 0].astype(np.float32))
        np.testing.assert_array_equal(got[1], want[:, 1].astype(np.float32))


def test_nstep_return_at_truncation_and_termination_and_gamma_099():
    # r = 1, 2, 4 with a time limit at the last step: the target bootstraps (gamma^3)...
    rewards = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]], np.float32)
    discounts = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], np.float32)
    ret, discount = transitions.nstep_return(rewards, discounts, 0.5, np)
    np.testing.assert_array_equal(ret, [3.0, 3.0])         # 1 + 0.5 * 2 + 0.25 * 4
    np.testing.assert_array_equal(discount, [0.125, 0.0])  # ...a termination does not
    # Any gamma, any leading shape: within float32 rounding of the float64 loop.
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(4, 6, 3)).astype(np.float32)
    discounts = rng.choice([0.0, 0.5, 1.0], size=(4, 6, 3)).astype(np.float32)
    ret, discount = transitions.nstep_return(rewards, discounts, 0.99, np)
    want = np.array([brute_force_nstep(r, d, 0.99)
                     for r, d in zip(rewards.reshape(-1, 3), discounts.reshape(-1, 3))])
    np.testing.assert_allclose(ret.reshape(-1), want[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(discount.reshape(-1), want[:, 1], rtol=1e-6)


# ----------------------------------------------------------------------------- sampleability
@pytest.mark.parametrize("capacity,nstep,frame_stack", [(13, 3, 3), (10, 1, 3), (17, 2, 1),
                                                        (12, 4, 2), (40, 3, 3)])
def test_is_sampleable_equals_brute_force_at_every_fill_level(capacity, nstep, frame_stack):
    """Every start from before the ring to past the newest timestep, after every add
    (empty ring, partly filled, wrapped several times), in numpy, jax.numpy and for one
    Python int (as the O(1) check on each add calls it)."""
    rng = np.random.default_rng(capacity)
    stream = random_stream(rng, 5 * capacity)
    layout = transitions.Layout(capacity, nstep, 0.99, frame_stack, True)
    for num_added in range(len(stream) + 1):
        positions = ring_of(stream, num_added, capacity)
        starts = np.arange(num_added - capacity - 3, num_added + 3)
        want = [brute_force_sampleable(stream, int(t), num_added, capacity, nstep, frame_stack)
                for t in starts]
        got = transitions.is_sampleable(starts, positions, num_added, layout, np)
        assert got.tolist() == want, num_added
        on_device = transitions.is_sampleable(jnp.asarray(starts), jnp.asarray(positions),
                                              num_added, layout, jnp)
        assert np.asarray(on_device).tolist() == want, num_added
        assert [bool(transitions.is_sampleable(int(t), positions, num_added, layout, np))
                for t in starts] == want, num_added


def test_stack_frames_and_the_first_complete_timestep_equal_brute_force():
    """Each stack's frames walk back k-1 timesteps and stop at the episode's FIRST; the
    first complete timestep of the ring is the oldest whose walk stays in the ring."""
    from pixelzoo.replay import ReplayBuffer, first_complete_timestep
    capacity, frame_stack = 11, 3
    rng = np.random.default_rng(3)
    stream = random_stream(rng, 60, max_length=5)
    layout = transitions.Layout(capacity, 2, 0.99, frame_stack, True)
    positions = np.array([p for _, p, _, _ in stream], np.int32)
    indices = np.arange(len(stream))
    got = transitions.stack_frame_indices(indices, positions, frame_stack, np)
    for index in indices.tolist():
        frames = [index]
        for _ in range(frame_stack - 1):
            previous = frames[0] - 1
            same = previous >= 0 and stream[previous][0] == stream[index][0]
            frames.insert(0, previous if same else frames[0])
        assert got[index].tolist() == frames, index
    # first_complete_timestep reads a ReplayBuffer: one whose positions ring is the stream's.
    import dm_env
    from dm_env import specs
    buffer = ReplayBuffer(specs.Array((2, 2, 3 * frame_stack), np.uint8),
                          specs.Array((1,), np.float32), capacity, nstep=2)
    obs = np.zeros((2, 2, 3 * frame_stack), np.uint8)
    for num_added, (_, position, reward, discount) in enumerate(stream, start=1):
        if position == 0:
            buffer.add(dm_env.restart(obs))
        else:
            buffer.add(dm_env.transition(reward, obs, discount), np.zeros(1, np.float32))
        oldest = max(num_added - capacity, 0)
        stored = [i for i in range(oldest, num_added) if got[i][0] >= oldest]
        assert first_complete_timestep(buffer) == (stored[0] if stored else num_added)
        assert transitions.is_stack_stored(np.arange(oldest, num_added),
                                           positions[oldest:num_added], num_added, layout,
                                           np).tolist() == [got[i][0] >= oldest
                                                            for i in range(oldest, num_added)]


def test_frames_on_channels_is_the_same_in_numpy_and_jax():
    rng = np.random.default_rng(4)
    ring = rng.integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
    slots = rng.integers(0, 7, (5, 3))
    want = np.concatenate([ring[slots[:, j]] for j in range(3)], axis=-1)     # [5, 4, 4, 9]
    np.testing.assert_array_equal(transitions.frames_on_channels(ring, slots, np), want)
    got = jax.jit(lambda r, s: transitions.frames_on_channels(r, s, jnp))(ring, slots)
    np.testing.assert_array_equal(np.asarray(got), want)

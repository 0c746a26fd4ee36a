"""Running statistics and normalizers against numpy oracles."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.normalization import ObsNormalizer, RewardScaler, RunningMeanStd, normalize_advantage


def test_chunked_updates_equal_numpy_over_the_concatenation():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    rms = RunningMeanStd((4,), epsilon=0.0 + 1e-12)
    for chunk in np.array_split(data, [1, 10, 300, 301, 999]):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=2, max_size=6), st.integers(0, 1000))
def test_merge_is_order_and_chunk_invariant(sizes, seed):
    rng = np.random.default_rng(seed)
    chunks = [rng.normal(size=(n, 2)) * 10 for n in sizes]
    a, b = RunningMeanStd((2,), 1e-12), RunningMeanStd((2,), 1e-12)
    for c in chunks:
        a.update(c)
    for c in reversed(chunks):
        b.update(c)
    allx = np.concatenate(chunks)
    np.testing.assert_allclose(a.mean, allx.mean(0), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(a.var, b.var, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(a.var, allx.var(0), rtol=1e-6, atol=1e-9)


def test_obs_normalizer_clips_ignores_dead_rows_and_freezes_in_eval():
    norm = ObsNormalizer((1,), clip=2.0)
    obs = np.array([[[1.0], [0.0]], [[3.0], [0.0]]])  # [E=2, A=2, 1]; agent 1 dead (zeros)
    alive = np.array([[True, False], [True, False]])
    norm(obs, alive)
    assert abs(norm.rms.mean[0] - 2.0) < 1e-3  # zeros of the dead agent not counted
    out = norm.normalize(np.array([[100.0]]))
    assert out[0, 0] == 2.0
    norm.training = False
    before = norm.rms.mean.copy()
    norm(np.full((5, 1, 1), 50.0))
    np.testing.assert_array_equal(norm.rms.mean, before)


def test_reward_scaler_divides_by_discounted_return_std_without_mean_shift():
    gamma = 0.9
    scaler = RewardScaler((1,), gamma, clip=None)
    rewards = [1.0, 1.0, 1.0, 1.0]
    rets, g = [], 0.0
    for r in rewards:
        g = gamma * g + r
        rets.append(g)
        out = scaler(np.array([r]), np.array([False]))
    ref = RunningMeanStd(())
    ref.update(np.array(rets))
    expected = 1.0 / np.sqrt(ref.var + 1e-8)
    np.testing.assert_allclose(out, [expected], rtol=1e-5)
    assert out[0] > 0  # no mean subtraction: a positive reward stays positive


def test_reward_scaler_resets_return_on_done_and_clips():
    scaler = RewardScaler((2,), 0.99, clip=0.5)
    scaler(np.array([1.0, 1.0]), np.array([True, False]))
    assert scaler.ret[0] == 0.0 and scaler.ret[1] == 1.0
    assert np.all(np.abs(scaler.scale(np.array([1e6, -1e6]))) == 0.5)


def test_state_dict_round_trip_is_weights_only_loadable(tmp_path):
    norm = ObsNormalizer((3,))
    norm(np.random.default_rng(0).normal(size=(10, 1, 3)))
    torch.save(norm.state_dict(), tmp_path / "n.pt")
    other = ObsNormalizer((3,))
    other.load_state_dict(torch.load(tmp_path / "n.pt", weights_only=True))
    np.testing.assert_array_equal(other.rms.mean, norm.rms.mean)
    assert other.rms.count == norm.rms.count
    with pytest.raises(ValueError, match="shape"):
        ObsNormalizer((4,)).load_state_dict(norm.state_dict())


def test_advantage_normalization_uses_alive_entries_only():
    adv = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([True, True, True, False])
    out = normalize_advantage(adv, mask)
    assert abs(out[:3].mean().item()) < 1e-6
    assert abs(out[:3].std().item() - 1.0) < 1e-4

"""RolloutCollector: backends and overlap store the same rollout; the bootstrap value at a time limit is
the critic's value of the real final observation; reward scaling restarts its running return at episode ends.

Oracles: a second collector on another backend or chunking (same seed), and a replay of the stored
actions in a plain ``gymnasium.make`` env seeded as the vector env seeds its copies.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from marl.config import load_config
from marl.env.make import vector_env
from marl.loop import EnvLoop
from marl.on_policy.collector import RolloutCollector
from marl.on_policy.policy import ActorCriticPolicy
from marl.seeding import seeds_for

FIELDS = ("obs", "action", "log_prob", "value", "alive", "reward", "terminated", "truncated", "final_value")
SEED = 3


def collect(overrides, backend="sync", overlap=False, rollouts=2):
    """``rollouts`` consecutive rollouts (copies of every stored field, ``last_value``, episode count) and the
    policy, for 4 env copies (2 workers on the subprocess backend); networks seeded alike."""
    cfg = load_config(None, [f"env.backend={backend}", "env.num_workers=2", f"env.overlap={overlap}",
                             "env.num_envs=4", f"seed={SEED}", *overrides])
    env = vector_env(cfg, cfg.env.num_envs)
    try:
        loop = EnvLoop(env, overlap=cfg.env.overlap)
        loop.reset(cfg.seed)
        assert len(loop.units) == (2 if backend == "subprocess" and overlap else 1)
        torch.manual_seed(0)
        policy = ActorCriticPolicy(env.spec, cfg)
        collector = RolloutCollector(loop, policy, num_steps=cfg.algo.num_steps, reward_norm=cfg.norm.reward,
                                     reward_clip=cfg.norm.reward_clip, gamma=cfg.algo.gamma)
        out = []
        for _ in range(rollouts):
            r = collector.collect()
            (name, buf), = r.groups.items()
            stored = {k: getattr(buf, k).clone() for k in FIELDS}
            stored["last_value"] = r.last_value[name].clone()
            stored["episodes"] = len(r.episodes)
            out.append(stored)
        return out, policy, cfg
    finally:
        env.close()


def assert_same(a, b, exact, close=()):
    for ra, rb in zip(a, b, strict=True):
        assert ra["episodes"] == rb["episodes"]
        for k in exact:
            assert torch.equal(ra[k], rb[k]), k
        for k in close:  # the critic on 2 rows instead of 4: float rounding of the matmuls
            torch.testing.assert_close(ra[k], rb[k], rtol=1e-6, atol=1e-6, msg=k)


CARTPOLE = ["env.id=CartPole-v1", "algo.num_steps=40"]
PENDULUM = ["env.id=Pendulum-v1", "env.kwargs={max_episode_steps: 7}", "algo.num_steps=10"]


@pytest.mark.parametrize("overrides", [CARTPOLE, PENDULUM], ids=["discrete", "continuous"])
def test_sync_and_subprocess_backends_store_identical_rollouts(overrides):
    # Normalizers on (the defaults): observation and reward statistics see the same steps in the same order.
    ref, _, _ = collect(overrides, "sync")
    assert sum(r["episodes"] for r in ref) > 0 and any(r["truncated"].any() or r["terminated"].any() for r in ref)
    for backend, overlap in (("sync", True), ("subprocess", False)):  # one chunk on sync: overlap changes nothing
        other, _, _ = collect(overrides, backend, overlap)
        assert_same(ref, other, exact=(*FIELDS, "last_value"))


def test_overlap_on_subprocess_workers_stores_the_same_rollout():
    # Overlap acts on one worker's copies while the other steps: the same steps, in another order of chunks.
    off, _, _ = collect([*CARTPOLE, "norm.obs=false", "norm.reward=false"], "subprocess", overlap=False)
    on, _, _ = collect([*CARTPOLE, "norm.obs=false", "norm.reward=false"], "subprocess", overlap=True)
    # Network outputs of a 2-copy batch and of a 4-copy batch may differ in the last bits (matmul kernels
    # depend on the batch shape): log-probs and values are compared to float tolerance, the rest exactly.
    assert_same(off, on, exact=("obs", "action", "alive", "reward", "terminated", "truncated"),
                close=("log_prob", "value", "final_value", "last_value"))


@pytest.mark.xfail(strict=True, reason=(
    "overlap changes the stored rollout: the collector updates the observation and reward normalizers per chunk "
    "(a chunk is normalized with statistics that include the other chunk's rows of the same step, or not), and "
    "Gaussian noise is drawn per chunk, in another order than for all copies at once"))
@pytest.mark.parametrize("overrides", [CARTPOLE, [*PENDULUM, "norm.obs=false", "norm.reward=false"]],
                         ids=["normalizers", "gaussian-noise"])
def test_overlap_with_normalizers_or_continuous_actions_stores_the_same_rollout(overrides):
    off, _, _ = collect(overrides, "subprocess", overlap=False)
    on, _, _ = collect(overrides, "subprocess", overlap=True)
    assert_same(off, on, exact=("obs", "action", "log_prob", "alive", "reward", "terminated", "truncated"),
                close=("value", "final_value", "last_value"))


def replay_pendulum(actions: np.ndarray, n_envs: int, max_steps: int):
    """Replay ``env_actions [T, E, 1, 1]`` in plain Gymnasium Pendulums seeded as the vector env seeds its copies
    (auto-resets take no seed). Returns raw rewards, terminated, truncated ``[T, E]`` and the final observation
    ``[T, E, 3]`` of every step that ended an episode (zeros elsewhere)."""
    T = actions.shape[0]
    reward = np.zeros((T, n_envs))
    term = np.zeros((T, n_envs), bool)
    trunc = np.zeros((T, n_envs), bool)
    final = np.zeros((T, n_envs, 3), np.float32)
    for e, seed in enumerate(seeds_for(SEED, n_envs)):
        env = gymnasium.make("Pendulum-v1", max_episode_steps=max_steps)
        env.reset(seed=seed)
        for t in range(T):
            obs, reward[t, e], term[t, e], trunc[t, e], _ = env.step(actions[t, e, 0])
            if term[t, e] or trunc[t, e]:
                final[t, e] = obs
                env.reset()
    return reward, term, trunc, final


def test_final_value_at_a_time_limit_is_the_critics_value_of_the_real_final_observation():
    rollout, policy, _ = collect([*PENDULUM, "norm.obs=false", "norm.reward=false", "algo.num_steps=12"],
                                 rollouts=1)
    r = rollout[0]
    net = policy.net["agent"]
    env_action = net.env_action(r["action"]).numpy()
    reward, term, trunc, final = replay_pendulum(env_action, 4, max_steps=7)
    np.testing.assert_array_equal(r["reward"][..., 0].numpy(), reward.astype(np.float32))  # the replay is faithful
    np.testing.assert_array_equal(r["truncated"][..., 0].numpy(), trunc)
    assert not term.any() and trunc[6].all() and trunc.sum() == 4  # Pendulum only ends at its time limit
    with torch.no_grad():
        expected = net.value(torch.from_numpy(final)[:, :, None])[..., 0]  # [T, E]
    got = r["final_value"][..., 0]
    torch.testing.assert_close(got[6], expected[6], rtol=1e-6, atol=1e-6)
    assert torch.all(got[~torch.from_numpy(trunc)] == 0.0)  # only truncated steps bootstrap from a final value
    # The observation stored at the next step is the reset one: its value is not the final value.
    assert not torch.allclose(r["value"][7, :, 0], got[6], atol=1e-3)


def hand_scaled_rewards(reward, done, gamma, clip, epsilon=1e-8, prior_count=1e-4):
    """Reward scaling by hand: per copy the running discounted return ``R = gamma R + r`` (0 again after an
    episode ends); ``r / sqrt(var + epsilon)`` with ``var`` the variance of every ``R`` so far, pooled with the
    normalizer's prior (mean 0, variance 1, weight ``prior_count``)."""
    R = np.zeros(reward.shape[1])
    seen = []
    out = np.zeros_like(reward)
    for t in range(reward.shape[0]):
        R = gamma * R + reward[t]
        seen.extend(R.tolist())
        x = np.array(seen)
        total = prior_count + x.size
        mean = x.sum() / total
        var = (prior_count * (1.0 + mean**2) + ((x - mean) ** 2).sum()) / total
        out[t] = np.clip(reward[t] / np.sqrt(var + epsilon), -clip, clip)
        R = np.where(done[t], 0.0, R)
    return out


def test_reward_scaling_restarts_the_running_return_at_episode_ends():
    rollout, policy, cfg = collect([*PENDULUM, "norm.obs=false", "norm.reward=true", "norm.reward_clip=10",
                                    "algo.num_steps=16"], rollouts=1)
    r = rollout[0]
    raw, term, trunc, _ = replay_pendulum(policy.net["agent"].env_action(r["action"]).numpy(), 4, max_steps=7)
    done = term | trunc
    assert done[6].all() and done[13].all()
    expected = hand_scaled_rewards(raw, done, cfg.algo.gamma, cfg.norm.reward_clip)
    np.testing.assert_allclose(r["reward"][..., 0].numpy(), expected, rtol=2e-6)
    # The oracle can tell: a running return that never restarts scales the later rewards differently.
    never_reset = hand_scaled_rewards(raw, np.zeros_like(done), cfg.algo.gamma, cfg.norm.reward_clip)
    assert np.abs(never_reset[7:] - expected[7:]).max() > 1e-2


@pytest.mark.parametrize("backend, overlap", [("sync", False), ("subprocess", True)])
def test_a_rollout_stopped_early_is_the_start_of_the_full_one_and_the_next_goes_on(backend, overlap):
    """collect(stop) (DD-PPO preemption): a rollout ended after 7 steps holds the full rollout's first 7 rows,
    nothing is left in flight (with overlapped workers too), and the next rollout continues the same stream:
    7 + 33 rows = the 40 rows of one uninterrupted rollout; its bootstrap value is the critic's at step 7."""
    overrides = [*CARTPOLE, "norm.obs=false", "norm.reward=false"]

    def run(stops):
        cfg = load_config(None, [f"env.backend={backend}", "env.num_workers=2", f"env.overlap={overlap}",
                                 "env.num_envs=4", f"seed={SEED}", *overrides])
        env = vector_env(cfg, cfg.env.num_envs)
        try:
            loop = EnvLoop(env, overlap=cfg.env.overlap)
            loop.reset(cfg.seed)
            torch.manual_seed(0)
            policy = ActorCriticPolicy(env.spec, cfg)
            collector = RolloutCollector(loop, policy, num_steps=40, reward_norm=False, reward_clip=0.0, gamma=0.99)
            out = []
            for stop in stops:
                r = collector.collect(stop)
                buf = r.groups["agent"]
                out.append(({k: getattr(buf, k)[:r.steps].clone() for k in FIELDS}, r))
            return out
        finally:
            env.close()

    (full, whole), = run([None])
    (first, early), (second, _) = run([lambda n: n >= 7, None])
    assert early.steps == 7 and early.env_steps == 7 * 4 and whole.steps == 40
    for k in ("obs", "action", "alive", "reward", "terminated", "truncated"):
        assert torch.equal(torch.cat([first[k], second[k][:33]]), full[k]), k
    torch.testing.assert_close(early.last_value["agent"], full["value"][7], rtol=1e-6, atol=1e-6)

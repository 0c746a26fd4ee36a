"""Vector envs: seeding, sync == subprocess, chunked stepping, worker errors and clean shutdown."""

from __future__ import annotations

import functools
import gc
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import time

import gymnasium
import numpy as np
import psutil
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marl.env.adapters import GymAdapter, ParallelAdapter
from marl.env.make import make_adapter
from marl.env.vector import (
    EnvWorkerError,
    SubprocVectorEnv,
    SyncVectorEnv,
    chunk_slices,
    eval_seeds,
    make_vector_env,
    seeds_for,
)

SPREAD = functools.partial(make_adapter, "mpe2.simple_spread_v3", {"max_cycles": 7})


class FaultyEnv(ParallelEnv):
    """One agent; raises at step 3 in the env copy reset with ``bad_seed``."""

    def __init__(self, bad_seed: int):
        self.metadata, self.possible_agents = {"name": "faulty_v0"}, ["agent_0"]
        self.bad_seed, self.seed = bad_seed, None

    def observation_space(self, agent):
        return spaces.Box(-1, 1, (1,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.seed = seed if seed is not None else self.seed
        self.agents, self.t = list(self.possible_agents), 0
        return {"agent_0": np.zeros(1, np.float32)}, {"agent_0": {}}

    def step(self, actions):
        self.t += 1
        if self.seed == self.bad_seed and self.t == 3:
            raise ValueError("the faulty env broke at step 3")
        return (
            {"agent_0": np.zeros(1, np.float32)},
            {"agent_0": 0.0},
            {"agent_0": False},
            {"agent_0": False},
            {"agent_0": {}},
        )


class GoalEnv(gymnasium.Env):
    """Position += action; the achieved goal is the position, the first 2 obs entries."""

    observation_space = spaces.Dict(
        {
            "observation": spaces.Box(-50, 50, (2,), np.float32),
            "achieved_goal": spaces.Box(-50, 50, (2,), np.float32),
            "desired_goal": spaces.Box(-50, 50, (2,), np.float32),
        }
    )
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def _obs(self):
        return {"observation": self.pos, "achieved_goal": self.pos, "desired_goal": self.goal}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        self.goal, self.t = self.np_random.uniform(-1, 1, 2).astype(np.float32), 0
        return self._obs(), {}

    def step(self, action):
        self.pos, self.t = (self.pos + action).astype(np.float32), self.t + 1
        return self._obs(), 0.0, False, self.t >= 3, {"is_success": 0.0}


def goal_adapter() -> GymAdapter:
    return GymAdapter(GoalEnv())


# Worker processes import factories by module path; test modules are not importable under
# pytest's importlib mode, so subprocess tests build envs from importable ids.
GOAL_REACH = functools.partial(make_adapter, "envs.goal_reach", {"max_steps": 3})


def faulty_adapter(bad_seed: int) -> ParallelAdapter:
    return ParallelAdapter(FaultyEnv(bad_seed))


@pytest.fixture
def helper_processes():
    """Children that multiprocessing keeps for its own use (forkserver, resource tracker)."""
    multiprocessing.forkserver.ensure_running()
    multiprocessing.resource_tracker.ensure_running()
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _assert_no_workers(helpers: set[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _children() - helpers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children() - helpers == set()


def test_seeds_distinct_reproducible_and_disjoint():
    train = seeds_for(0, 1000)
    assert len(set(train)) == 1000 and train == seeds_for(0, 1000)
    assert seeds_for(0, 10) == train[:10]  # copy i gets the same seed for any number of copies
    assert seeds_for(1, 10) != train[:10]
    assert all(0 <= s < 2**31 for s in train + eval_seeds(0, 1000))  # every backend's range (hanabi: < 2**31)
    assert max(train) > 2**30  # the range is used, not a small corner of it
    evals = eval_seeds(0, 1000)
    assert len(set(evals)) == 1000 and not set(evals) & set(train)
    assert not set(eval_seeds(7, 500)) & set(seeds_for(7, 500))
    with pytest.raises(ValueError, match="non-negative"):
        seeds_for(-1, 3)


def test_chunk_slices_cover_contiguously():
    assert chunk_slices(7, 3) == [slice(0, 3), slice(3, 5), slice(5, 7)]
    assert chunk_slices(4, 4) == [slice(i, i + 1) for i in range(4)]
    with pytest.raises(ValueError, match="num_chunks"):
        chunk_slices(2, 3)


def _assert_same(a, b):
    for g in a.obs:
        for x, y in zip(a.obs[g], b.obs[g], strict=True):
            np.testing.assert_array_equal(x, y)
        for x, y in zip(a.transition[g], b.transition[g], strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.state, b.state)
    np.testing.assert_array_equal(a.final_state, b.final_state)
    assert a.episodes == b.episodes


def test_sync_equals_subprocess_and_seeds_reach_the_copies(helper_processes):
    num_envs, rng = 5, np.random.default_rng(0)
    sync = make_vector_env(SPREAD, num_envs, "sync")
    with make_vector_env(SPREAD, num_envs, "subprocess", num_workers=2) as sub:
        assert sub.num_chunks == 2 and sub.spec == sync.spec
        obs_a, state_a = sync.reset(seed=3)
        obs_b, state_b = sub.reset(seed=3)
        np.testing.assert_array_equal(obs_a["agent"].obs, obs_b["agent"].obs)
        np.testing.assert_array_equal(state_a, state_b)
        # Oracle: E separate adapters, copy i reset with seeds_for(seed, E)[i].
        singles = [SPREAD() for _ in range(num_envs)]
        for i, (single, seed) in enumerate(zip(singles, seeds_for(3, num_envs), strict=True)):
            first, state = single.reset(seed=seed)
            np.testing.assert_array_equal(obs_b["agent"].obs[i], first["agent"].obs)
            np.testing.assert_array_equal(state_b[i], state)
        episodes = []
        for _ in range(50):
            actions = {"agent": rng.integers(0, 5, (num_envs, 3))}
            a, b = sync.step(actions), sub.step(actions)
            _assert_same(a, b)
            for i, single in enumerate(singles):
                ref = single.step({"agent": actions["agent"][i]})
                np.testing.assert_array_equal(b.obs["agent"].obs[i], ref.obs["agent"].obs)
                np.testing.assert_array_equal(b.transition["agent"].reward[i], ref.transition["agent"].reward)
                np.testing.assert_array_equal(
                    b.transition["agent"].final_obs[i], ref.transition["agent"].final_obs
                )
                np.testing.assert_array_equal(b.final_state[i], ref.final_state)
                if ref.episode is not None:
                    assert ref.episode._replace(env_index=i) in b.episodes
            episodes += b.episodes
        assert len(episodes) == num_envs * (50 // 7)
        assert sorted(e.env_index for e in episodes) == sorted(list(range(num_envs)) * (50 // 7))
    sync.close()
    _assert_no_workers(helper_processes)


def test_chunked_send_recv_equals_step():
    num_envs, rng = 5, np.random.default_rng(1)
    whole = SyncVectorEnv(SPREAD, num_envs)
    chunked = SyncVectorEnv(SPREAD, num_envs, num_chunks=2)
    with SubprocVectorEnv(SPREAD, num_envs, num_workers=2) as sub:
        for env in (whole, chunked, sub):
            env.reset(seed=9)
        assert chunked.chunk_slice(0) == sub.chunk_slice(0) == slice(0, 3)
        for _ in range(20):
            actions = {"agent": rng.integers(0, 5, (num_envs, 3))}
            ref = whole.step(actions)
            for env in (chunked, sub):
                # overlap order: send both, receive the second chunk first
                for c in (0, 1):
                    env.send(c, {"agent": actions["agent"][env.chunk_slice(c)]})
                parts = [env.recv(1), env.recv(0)][::-1]
                for c, part in enumerate(parts):
                    sl = env.chunk_slice(c)
                    np.testing.assert_array_equal(part.obs["agent"].obs, ref.obs["agent"].obs[sl])
                    np.testing.assert_array_equal(
                        part.transition["agent"].reward, ref.transition["agent"].reward[sl]
                    )
                    np.testing.assert_array_equal(
                        part.transition["agent"].final_obs, ref.transition["agent"].final_obs[sl]
                    )
                    np.testing.assert_array_equal(part.state, ref.state[sl])
                    assert part.episodes == [e for e in ref.episodes if sl.start <= e.env_index < sl.stop]
        with pytest.raises(RuntimeError, match="recv"):
            sub.recv(0)
        sub.send(0, {"agent": np.zeros((3, 3), np.int64)})
        with pytest.raises(RuntimeError, match="twice"):
            sub.send(0, {"agent": np.zeros((3, 3), np.int64)})
    whole.close()
    chunked.close()


def test_returned_arrays_are_not_overwritten_by_the_next_step():
    with SubprocVectorEnv(SPREAD, 2, num_workers=1) as sub:
        sub.reset(seed=0)
        first = sub.step({"agent": np.zeros((2, 3), np.int64)})
        kept = first.obs["agent"].obs.copy()
        sub.step({"agent": np.ones((2, 3), np.int64)})
        np.testing.assert_array_equal(first.obs["agent"].obs, kept)


def test_worker_exception_names_env_copy_and_message(helper_processes):
    num_envs, bad = 4, 3
    sub = SubprocVectorEnv(SPREAD, num_envs, num_workers=2)
    sub.reset(seed=0)
    actions = {"agent": np.zeros((num_envs, 3), np.int64)}
    sub.step(actions)
    actions["agent"][bad, 1] = 9  # outside Discrete(5): mpe2 raises in env copy 3
    with pytest.raises(EnvWorkerError, match=r"env copy 3 raised AssertionError: action is not in") as info:
        sub.step(actions)
    assert info.value.env_index == bad
    assert "worker 1 (env copies 2..3)" in str(info.value) and "Traceback" in info.value.worker_traceback
    _assert_no_workers(helper_processes)
    sub.close()  # idempotent after the automatic close
    with pytest.raises(RuntimeError, match="closed"):
        sub.step(actions)


def test_worker_construction_error_is_reported(helper_processes):
    factory = functools.partial(make_adapter, "mpe2.simple_spread_v3", {"no_such_option": 1})
    with pytest.raises(EnvWorkerError, match=r"env copy 0 raised TypeError: .*no_such_option") as info:
        SubprocVectorEnv(factory, 2, num_workers=2)
    assert info.value.env_index == 0
    _assert_no_workers(helper_processes)


def test_killed_worker_fails_fast(helper_processes):
    sub = SubprocVectorEnv(SPREAD, 4, num_workers=2)
    sub.reset(seed=0)
    workers = _children() - helper_processes
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(EnvWorkerError, match="died"):
        for _ in range(100):
            sub.step({"agent": np.zeros((4, 3), np.int64)})
    assert time.monotonic() - start < 5.0
    _assert_no_workers(helper_processes)


def test_close_and_garbage_collection_leave_no_workers(helper_processes):
    sub = SubprocVectorEnv(SPREAD, 2, num_workers=2)
    assert len(_children() - helper_processes) == 2
    sub.close()
    sub.close()
    _assert_no_workers(helper_processes)
    sub = SubprocVectorEnv(SPREAD, 2, num_workers=2)
    sub.reset(seed=0)
    del sub
    gc.collect()
    _assert_no_workers(helper_processes)


def test_sync_error_names_env_copy():
    num_envs, bad = 3, 1
    env = SyncVectorEnv(functools.partial(faulty_adapter, seeds_for(0, num_envs)[bad]), num_envs)
    env.reset(seed=0)
    actions = {"agent": np.zeros((num_envs, 1), np.int64)}
    env.step(actions)
    env.step(actions)
    with pytest.raises(EnvWorkerError, match="env copy 1 raised ValueError: the faulty env broke") as info:
        env.step(actions)
    assert info.value.env_index == bad and isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize("factory", [goal_adapter, GOAL_REACH], ids=["in-process", "envs.goal_reach"])
def test_achieved_goals_travel_with_obs_and_final_obs(factory):
    """In both toy envs the achieved goal is the position, the first 2 observation entries; it comes with
    the observations (reset and step) and with the final observations (step), on every backend."""
    backends = ["sync"] if factory is goal_adapter else ["sync", "subprocess"]
    results = []
    for backend in backends:
        with make_vector_env(factory, 3, backend, num_workers=1) as env:
            obs, _ = env.reset(seed=4)
            np.testing.assert_array_equal(obs["agent"].achieved_goal, obs["agent"].obs[..., :2])
            rng = np.random.default_rng(0)
            for t in range(4):
                out = env.step({"agent": rng.uniform(-1, 1, (3, 1, 2)).astype(np.float32)})
                goals = (out.obs["agent"].achieved_goal, out.transition["agent"].final_achieved_goal)
                np.testing.assert_array_equal(goals[0], out.obs["agent"].obs[..., :2])
                final_obs = out.transition["agent"].final_obs
                assert out.transition["agent"].truncated.all() == (t == 2)
                np.testing.assert_array_equal(goals[1], final_obs[..., :2])
                results.append((goals, out.obs["agent"].obs))
    if len(backends) == 2:
        half = len(results) // 2
        for (ga, oa), (gb, ob) in zip(results[:half], results[half:], strict=True):
            np.testing.assert_array_equal(oa, ob)
            np.testing.assert_array_equal(ga[1], gb[1])


def test_render_through_workers_matches_in_process():
    factory = functools.partial(make_adapter, "mpe2.simple_spread_v3", {}, render_mode="rgb_array")
    sync = make_vector_env(factory, 2, "sync")
    with make_vector_env(factory, 2, "subprocess", num_workers=2) as sub:
        sync.reset(seed=1)
        sub.reset(seed=1)
        frame = sub.render(1)
        assert frame.dtype == np.uint8 and frame.ndim == 3
        np.testing.assert_array_equal(frame, sync.render(1))
    sync.close()

"""Pixel pipeline: frame-stack order and dtype, action-repeat sums and episode ends inside a repeat,
and the env-step / env-frame counters of a run with action repeat.

The toy envs below make every number visible: observation pixels encode the raw step index
(and agent and channel), rewards are the raw step index, so stacks and sums can be written by hand.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marl.config import load_config
from marl.env.adapters import GymAdapter, ParallelAdapter
from marl.env.make import adapt, env_factory
from marl.env.wrappers import Preprocess, apply_preprocess, stacked_shape
from marl.on_policy.trainer import OnPolicyTrainer

H, W, C = 3, 4, 3


def pixel(t: int, agent: int, channel: int) -> int:
    """The value of every pixel of ``channel`` in agent ``agent``'s observation after raw step ``t``."""
    return 16 * t + 4 * agent + channel


class CounterImages(ParallelEnv):
    """Two agents, uint8 images ``[H, W, C]`` filled with :func:`pixel`; reward of raw step ``t`` is ``t``.

    ``agent_1`` terminates at raw step ``death_step``; every agent left is truncated at ``max_steps``.
    """

    metadata: ClassVar[dict[str, str]] = {"name": "counter_images_v0"}
    render_mode = None

    def __init__(self, death_step: int = 100, max_steps: int = 100):
        self.possible_agents = ["agent_0", "agent_1"]
        self.death_step, self.max_steps = death_step, max_steps
        self.raw_steps = 0

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0, 255, (H, W, C), np.uint8)

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(2)

    def _obs(self, agent: str) -> np.ndarray:
        i = self.possible_agents.index(agent)
        values = np.array([pixel(self.t, i, c) for c in range(C)], np.uint8)
        return np.broadcast_to(values, (H, W, C)).copy()

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.t = 0
        self.agents = list(self.possible_agents)
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        assert set(actions) == set(self.agents), (actions, self.agents)
        self.t += 1
        self.raw_steps += 1
        acting = list(self.agents)
        obs = {a: self._obs(a) for a in acting}
        rewards = {a: float(self.t) for a in acting}
        terms = {a: a == "agent_1" and self.t == self.death_step for a in acting}
        truncs = {a: self.t >= self.max_steps and not terms[a] for a in acting}
        self.agents = [a for a in acting if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, {a: {} for a in acting}


class CounterGym(gymnasium.Env):
    """One agent; observation ``[t]`` (float32), reward ``t``; terminates at ``end_step`` unless a
    time limit wrapper cuts the episode first."""

    observation_space = spaces.Box(0.0, 1000.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, end_step: int = 100):
        self.end_step = end_step

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return np.array([self.t], np.float32), float(self.t), self.t == self.end_step, False, {}


def stacked_pixels(steps: list[int], agent: int) -> np.ndarray:
    """Expected channel values ``[k * C]`` of a stack of the frames after raw ``steps``, oldest first."""
    return np.array([pixel(t, agent, c) for t in steps for c in range(C)], np.uint8)


def channel_values(obs: np.ndarray) -> np.ndarray:
    """``[A, H, W, K]`` images that are constant over ``H, W`` -> their ``[A, K]`` channel values."""
    assert (obs == obs[:, :1, :1, :]).all(), "pixels of one channel should all be equal"
    return obs[:, 0, 0, :]


# ------------------------------------------------------------------------ frame stacking
def test_image_stack_is_oldest_first_on_the_channel_axis_and_stays_uint8():
    k = 3
    adapter = adapt(apply_preprocess(CounterImages(), Preprocess(frame_stack=k)))
    space = adapter.spec.groups[0].obs_space
    assert space.shape == stacked_shape((H, W, C), k) == (H, W, C * k) and space.dtype == np.uint8
    obs, _ = adapter.reset(seed=0)
    frames = [channel_values(obs["agent"].obs)]
    for _ in range(4):
        out = adapter.step({"agent": np.array([0, 1])})
        assert out.obs["agent"].obs.dtype == np.uint8
        frames.append(channel_values(out.obs["agent"].obs))
    # after a reset the stack holds copies of the first frame; each step drops the oldest (first) frame
    expected_steps = [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]
    for got, steps in zip(frames, expected_steps, strict=True):
        for agent in (0, 1):
            np.testing.assert_array_equal(got[agent], stacked_pixels(steps, agent))


def test_grayscale_resize_and_stack_keep_uint8_and_order():
    p = Preprocess(frame_stack=2, grayscale=True, resize=(6, 2))
    adapter = adapt(apply_preprocess(CounterImages(), p))
    space = adapter.spec.groups[0].obs_space
    assert space.shape == (6, 2, 2) and space.dtype == np.uint8
    adapter.reset(seed=0)
    adapter.step({"agent": np.array([0, 0])})
    obs = adapter.step({"agent": np.array([0, 0])}).obs["agent"].obs
    assert obs.dtype == np.uint8
    for agent in (0, 1):
        # luminance of an image with channels (v, v+1, v+2): 0.299 v + 0.587 (v+1) + 0.114 (v+2) = v + 0.815
        lum = [pixel(t, agent, 0) + 0.815 for t in (1, 2)]
        np.testing.assert_allclose(obs[agent, 0, 0, :], lum, atol=1.0)
        assert obs[agent, 0, 0, 0] < obs[agent, 0, 0, 1]  # oldest first


def test_vector_stack_of_a_gym_env_concatenates_oldest_first():
    adapter = adapt(apply_preprocess(CounterGym(), Preprocess(frame_stack=3)))
    assert adapter.spec.groups[0].obs_space.shape == (3,)
    obs, _ = adapter.reset(seed=0)
    seen = [obs["agent"].obs[0]]
    for _ in range(3):
        seen.append(adapter.step({"agent": np.array([0])}).obs["agent"].obs[0])
    np.testing.assert_array_equal(np.stack(seen), [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]])


def test_stack_with_action_repeat_holds_the_frames_of_decisions():
    # action repeat wraps the raw env (innermost), so the stack skips the repeated frames
    adapter = adapt(apply_preprocess(CounterImages(), Preprocess(frame_stack=2, action_repeat=3)))
    adapter.reset(seed=0)
    out = adapter.step({"agent": np.array([0, 0])})
    out = adapter.step({"agent": np.array([0, 0])})
    np.testing.assert_array_equal(channel_values(out.obs["agent"].obs)[1], stacked_pixels([3, 6], 1))


# ------------------------------------------------------------------------ action repeat
def test_parallel_repeat_sums_rewards_of_the_raw_steps():
    raw = CounterImages()
    adapter = ParallelAdapter(apply_preprocess(raw, Preprocess(action_repeat=3)))
    adapter.reset(seed=0)
    rewards = [adapter.step({"agent": np.array([1, 0])}).transition["agent"].reward for _ in range(2)]
    np.testing.assert_array_equal(rewards, [[1 + 2 + 3] * 2, [4 + 5 + 6] * 2])
    assert raw.raw_steps == 6


def test_parallel_truncation_inside_a_repeat_is_kept_apart_from_termination():
    # raw steps 1..3, then 4..5 where the time limit cuts the episode after raw step 5
    raw = CounterImages(max_steps=5)
    adapter = ParallelAdapter(apply_preprocess(raw, Preprocess(action_repeat=3)))
    adapter.reset(seed=0)
    adapter.step({"agent": np.array([0, 0])})
    out = adapter.step({"agent": np.array([0, 0])})
    tr = out.transition["agent"]
    np.testing.assert_array_equal(tr.reward, [4 + 5, 4 + 5])
    assert tr.truncated.tolist() == [True, True] and tr.terminated.tolist() == [False, False]
    final = [[pixel(5, a, c) for c in range(C)] for a in (0, 1)]
    np.testing.assert_array_equal(channel_values(tr.final_obs), final)
    assert raw.raw_steps == 5 and out.episode.length == 2


def test_parallel_death_and_time_limit_in_one_repeat():
    # agent_1 terminates at raw step 4, the time limit cuts agent_0 at raw step 5: both inside decision 2
    raw = CounterImages(death_step=4, max_steps=5)
    adapter = ParallelAdapter(apply_preprocess(raw, Preprocess(action_repeat=3)))
    adapter.reset(seed=0)
    adapter.step({"agent": np.array([0, 0])})
    tr = adapter.step({"agent": np.array([0, 0])}).transition["agent"]
    np.testing.assert_array_equal(tr.reward, [4 + 5, 4])
    assert tr.terminated.tolist() == [False, True] and tr.truncated.tolist() == [True, False]
    np.testing.assert_array_equal(channel_values(tr.final_obs)[:, 0], [pixel(5, 0, 0), pixel(4, 1, 0)])


@pytest.mark.parametrize(("time_limit", "terminated", "truncated"), [(None, True, False), (5, False, True)])
def test_gym_episode_end_inside_a_repeat(time_limit, terminated, truncated):
    # the episode ends at raw step 5, inside the second decision of 3 raw steps
    env: gymnasium.Env = CounterGym(end_step=5 if time_limit is None else 100)
    if time_limit is not None:
        env = gymnasium.wrappers.TimeLimit(env, max_episode_steps=time_limit)
    adapter = GymAdapter(apply_preprocess(env, Preprocess(action_repeat=3)))
    adapter.reset(seed=0)
    first = adapter.step({"agent": np.array([0])})
    second = adapter.step({"agent": np.array([0])})
    assert first.transition["agent"].reward[0] == 1 + 2 + 3 and first.episode is None
    tr = second.transition["agent"]
    assert tr.reward[0] == 4 + 5
    assert (bool(tr.terminated[0]), bool(tr.truncated[0])) == (terminated, truncated)
    assert tr.final_obs[0, 0] == 5.0 and second.obs["agent"].obs[0, 0] == 0.0  # auto-reset after the end
    assert second.episode.length == 2 and second.episode.returns == {"agent_0": 15.0}


# ------------------------------------------------------------------------ counters of a run
def test_run_counts_decisions_as_env_steps_and_frames_with_the_repeat(tmp_path):
    run = tmp_path / "run"
    cfg = load_config(
        "configs/grid_nav_world_ppo.yaml",
        [
            f"run_dir={run}", "total_env_steps=64", "env.num_envs=2", "env.action_repeat=2",
            "env.frame_stack=2", "env.kwargs.obs_mode=image", "env.kwargs.max_cycles=8", "algo.num_steps=16",
            "algo.num_minibatches=2", "algo.update_epochs=1", "eval.episodes=2", "eval.num_envs=2",
            "log.tensorboard=false", "log.progress=false",
        ],
    )
    summary = OnPolicyTrainer(cfg).train()
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 64 and summary["env_frames"] == 2 * 64
    assert 0 < summary["agent_steps"] <= 2 * 64  # two agents, removed when they reach their goal
    # a time limit of 8 raw steps is at most 4 decisions of 2 frames each
    assert 1 <= summary["final_eval"]["ep_length"] <= 8 / 2


# ------------------------------------------------------------------------ the pistonball configs
@pytest.mark.parametrize("config", ["configs/pistonball_ppo.yaml", "configs/pistonball_small_ppo.yaml"])
def test_pistonball_configs_give_observations_that_move(config):
    # pistonball redraws the screen its observations are cut from only when it has a render mode;
    # the configs must ask for one, or every observation is the first frame and the pistons are blind
    cfg = load_config(config, ["env.kwargs.n_pistons=5", "env.num_envs=1", "env.action_repeat=1"])
    adapter = env_factory(cfg)()
    obs, _ = adapter.reset(seed=0)
    assert obs["piston"].obs.dtype == np.uint8 and obs["piston"].obs.shape == (5, 42, 42, 4)
    rng = np.random.default_rng(0)
    moved = []
    for _ in range(4):
        out = adapter.step({"piston": rng.integers(0, 3, 5)})
        assert out.episode is None  # no reset in between: a changed frame comes from the game itself
        stack = out.obs["piston"].obs
        moved.append(bool((stack[..., -1] != stack[..., -2]).any()))
    adapter.close()
    assert all(moved), "consecutive frames are equal: the env is not redrawing its screen"

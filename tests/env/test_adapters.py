"""Adapters: spaces, groups, truncation vs termination, agent death, turns, goals, masks."""

from __future__ import annotations

import functools

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from mpe2 import simple_adversary_v3, simple_spread_v3
from pettingzoo import ParallelEnv
from pettingzoo.classic import connect_four_v3, tictactoe_v3

from marl.env.adapters import AECAdapter, GymAdapter, ParallelAdapter
from marl.env.wrappers import ParallelActionRepeat
from marl.multi_agent.groups import default_groups


class DyingEnv(ParallelEnv):
    """Two agents; ``agent_1`` dies (terminated) at its 2nd step; truncation after 4 steps.

    obs = [t, agent index, 7]; reward = 1 + agent index per step; masks in infos
    (action ``t % 3`` forbidden). ``is_success`` is 1 for agent_0, 0 for agent_1 at their ends.
    """

    def __init__(self, death_step: int = 2, max_steps: int = 4, masks: bool = False):
        self.metadata = {"name": "dying_v0"}
        self.possible_agents = ["agent_0", "agent_1"]
        self.death_step, self.max_steps, self.masks = death_step, max_steps, masks

    def observation_space(self, agent):
        return spaces.Box(-100.0, 100.0, (3,), np.float64)

    def action_space(self, agent):
        return spaces.Discrete(3)

    def _obs(self, agent):
        return np.array([self.t, self.possible_agents.index(agent), 7.0])

    def _infos(self, agents, end=()):
        infos = {}
        for a in agents:
            info = {"action_mask": (np.arange(3) != self.t % 3).astype(np.int8)} if self.masks else {}
            if a in end:
                info["is_success"] = float(a == "agent_0")
            infos[a] = info
        return infos

    def reset(self, seed=None, options=None):
        self.t = 0
        self.agents = list(self.possible_agents)
        self.actions_seen = []
        return {a: self._obs(a) for a in self.agents}, self._infos(self.agents)

    def step(self, actions):
        assert set(actions) == set(self.agents), (actions, self.agents)
        self.actions_seen.append(dict(actions))
        self.t += 1
        acting = list(self.agents)
        obs = {a: self._obs(a) for a in acting}
        rewards = {a: 1.0 + self.possible_agents.index(a) for a in acting}
        terms = {a: a == "agent_1" and self.t == self.death_step for a in acting}
        truncs = {a: self.t >= self.max_steps and not terms[a] for a in acting}
        self.agents = [a for a in acting if not (terms[a] or truncs[a])]
        return (
            obs,
            rewards,
            terms,
            truncs,
            self._infos(acting, end=[a for a in acting if terms[a] or truncs[a]]),
        )


def test_default_groups_by_prefix():
    assert default_groups(["adversary_0", "agent_0", "agent_1", "hero"]) == {
        "adversary": ["adversary_0"],
        "agent": ["agent_0", "agent_1"],
        "hero": ["hero"],
    }


def test_simple_spread_spec():
    spec = ParallelAdapter(simple_spread_v3.parallel_env()).spec
    assert spec.agents == ("agent_0", "agent_1", "agent_2")
    (group,) = spec.groups
    assert group.name == "agent" and group.agents == spec.agents
    assert group.obs_space.shape == (18,) and group.obs_space.dtype == np.float32
    assert group.action_space == spaces.Discrete(5) and not group.has_action_mask
    assert spec.state_shape == (54,) and not spec.turn_based


def test_simple_spread_matches_raw_env_through_truncation():
    max_cycles, seed = 6, 11
    adapter = ParallelAdapter(simple_spread_v3.parallel_env(max_cycles=max_cycles))
    raw = simple_spread_v3.parallel_env(max_cycles=max_cycles)
    obs, state = adapter.reset(seed=seed)
    raw_obs, _ = raw.reset(seed=seed)
    np.testing.assert_array_equal(obs["agent"].obs, np.stack([raw_obs[a] for a in raw.possible_agents]))
    np.testing.assert_array_equal(state, raw.state())
    rng = np.random.default_rng(0)
    returns = np.zeros(3)
    for t in range(max_cycles):
        actions = rng.integers(0, 5, 3)
        out = adapter.step({"agent": actions})
        raw_obs, raw_rew, raw_term, raw_trunc, _ = raw.step(
            {a: int(actions[i]) for i, a in enumerate(raw.possible_agents)}
        )
        tr = out.transition["agent"]
        expected_rew = np.array([raw_rew[a] for a in raw.possible_agents], np.float32)
        np.testing.assert_array_equal(tr.reward, expected_rew)
        returns += expected_rew
        assert not tr.terminated.any()
        if t < max_cycles - 1:
            assert not tr.truncated.any() and out.episode is None and not tr.final_obs.any()
            np.testing.assert_array_equal(
                out.obs["agent"].obs, np.stack([raw_obs[a] for a in raw.possible_agents])
            )
            np.testing.assert_array_equal(out.state, raw.state())
            np.testing.assert_array_equal(out.final_state, np.zeros(54))
    # The last step truncates every agent: the real final obs is kept, the obs is a fresh episode.
    assert tr.truncated.all() and all(raw_trunc.values()) and not any(raw_term.values())
    np.testing.assert_array_equal(tr.final_obs, np.stack([raw_obs[a] for a in raw.possible_agents]))
    np.testing.assert_array_equal(out.final_state, raw.state())
    assert out.episode.length == max_cycles and out.episode.info == {"truncated": 1.0}
    np.testing.assert_allclose(list(out.episode.returns.values()), returns, rtol=1e-6)
    reset_obs, _ = raw.reset()  # the adapter resets without a seed: the env continues its own RNG
    np.testing.assert_array_equal(out.obs["agent"].obs, np.stack([reset_obs[a] for a in raw.possible_agents]))
    assert out.obs["agent"].alive.all()
    np.testing.assert_array_equal(out.state, raw.state())


def test_simple_adversary_groups_and_unequal_spaces():
    spec = ParallelAdapter(simple_adversary_v3.parallel_env()).spec
    assert [g.name for g in spec.groups] == ["adversary", "agent"]
    assert spec.group("adversary").obs_space.shape == (8,) and spec.group("agent").obs_space.shape == (10,)
    assert spec.group("agent").agents == ("agent_0", "agent_1")
    with pytest.raises(ValueError, match=r"adversary_0.*agent_0.*different groups.*pad"):
        ParallelAdapter(
            simple_adversary_v3.parallel_env(), groups={"all": ["adversary_0", "agent_0", "agent_1"]}
        )
    with pytest.raises(ValueError, match="partition"):
        ParallelAdapter(simple_adversary_v3.parallel_env(), groups={"a": ["agent_0"], "b": ["agent_1"]})


def test_agent_death_masks_and_episode_stats():
    adapter = ParallelAdapter(DyingEnv(masks=True))
    g = adapter.spec.group("agent")
    assert g.has_action_mask and g.obs_space.dtype == np.float32
    obs, _ = adapter.reset(seed=0)
    np.testing.assert_array_equal(obs["agent"].action_mask, [[False, True, True]] * 2)
    out = adapter.step({"agent": np.array([1, 2])})
    assert out.obs["agent"].alive.tolist() == [True, True]
    out = adapter.step({"agent": np.array([1, 2])})  # agent_1 dies here
    tr = out.transition["agent"]
    assert tr.terminated.tolist() == [False, True] and not tr.truncated.any()
    np.testing.assert_array_equal(tr.final_obs, [[0, 0, 0], [2, 1, 7]])
    np.testing.assert_array_equal(tr.reward, [1, 2])
    assert out.obs["agent"].alive.tolist() == [True, False] and out.episode is None
    np.testing.assert_array_equal(out.obs["agent"].obs, [[2, 0, 7], [0, 0, 0]])
    np.testing.assert_array_equal(out.obs["agent"].action_mask, [[True, True, False], [True, True, True]])
    out = adapter.step({"agent": np.array([0, 2])})  # agent_1's action is ignored
    assert adapter._env.actions_seen[-1] == {"agent_0": 0}
    tr = out.transition["agent"]
    np.testing.assert_array_equal(tr.reward, [1, 0])
    assert not tr.terminated.any() and not tr.truncated.any() and out.episode is None
    out = adapter.step({"agent": np.array([0, 0])})  # agent_0 truncated: episode over
    tr = out.transition["agent"]
    assert tr.truncated.tolist() == [True, False] and not tr.terminated.any()
    np.testing.assert_array_equal(tr.final_obs, [[4, 0, 7], [0, 0, 0]])
    assert out.episode.returns == {"agent_0": 4.0, "agent_1": 4.0} and out.episode.length == 4
    assert out.episode.info == {"truncated": 1.0, "is_success": 0.5}
    assert out.obs["agent"].alive.all()
    np.testing.assert_array_equal(out.obs["agent"].obs[:, 0], [0, 0])  # new episode


def test_step_before_reset_and_bad_actions_raise():
    adapter = ParallelAdapter(DyingEnv())
    with pytest.raises(RuntimeError, match="reset"):
        adapter.step({"agent": np.zeros(2, np.int64)})
    adapter.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        adapter.step({"agent": np.zeros(3, np.int64)})


def test_parallel_action_repeat_sums_rewards_and_stops_at_death():
    env = ParallelActionRepeat(DyingEnv(death_step=2, max_steps=9), repeat=3)
    adapter = ParallelAdapter(env)
    adapter.reset(seed=0)
    out = adapter.step({"agent": np.array([1, 1])})
    tr = out.transition["agent"]
    # agent_1 dies at raw step 2 inside the repeat: reward 2 + 2, final obs of raw step 2;
    # agent_0 goes on for all 3 raw steps.
    np.testing.assert_array_equal(tr.reward, [3.0, 4.0])
    assert tr.terminated.tolist() == [False, True]
    np.testing.assert_array_equal(tr.final_obs[1], [2, 1, 7])
    np.testing.assert_array_equal(out.obs["agent"].obs[0], [3, 0, 7])
    assert env.env.actions_seen == [{"agent_0": 1, "agent_1": 1}] * 2 + [{"agent_0": 1}]
    out = adapter.step({"agent": np.array([1, 1])})
    out = adapter.step({"agent": np.array([1, 1])})  # raw steps 7..9: truncation at 9
    assert out.transition["agent"].truncated.tolist() == [True, False] and out.episode.length == 3


def test_gym_cartpole_time_limit_truncation():
    seed = 5
    adapter = GymAdapter(gymnasium.make("CartPole-v1", max_episode_steps=5))
    raw = gymnasium.make("CartPole-v1", max_episode_steps=5)
    spec = adapter.spec
    assert spec.agents == ("agent_0",) and spec.groups[0].name == "agent" and spec.state_shape is None
    obs, state = adapter.reset(seed=seed)
    raw_obs, _ = raw.reset(seed=seed)
    assert state is None and obs["agent"].obs.shape == (1, 4)
    np.testing.assert_array_equal(obs["agent"].obs[0], raw_obs)
    for t in range(5):
        out = adapter.step({"agent": np.array([t % 2])})
        raw_obs, _, term, trunc, _ = raw.step(t % 2)
    tr = out.transition["agent"]
    assert tr.truncated.tolist() == [True] and tr.terminated.tolist() == [False] and trunc and not term
    np.testing.assert_array_equal(tr.final_obs[0], raw_obs)
    np.testing.assert_array_equal(out.obs["agent"].obs[0], raw.reset()[0])
    assert out.episode.length == 5 and out.episode.returns == {"agent_0": 5.0}


def test_gym_box_actions_are_clipped():
    class Echo(gymnasium.Env):
        observation_space = spaces.Box(-5, 5, (2,), np.float32)
        action_space = spaces.Box(np.array([-1, 0], np.float32), np.array([1, 2], np.float32))

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(2, np.float32), {}

        def step(self, action):
            return np.asarray(action, np.float32), 0.0, False, False, {}

    adapter = GymAdapter(Echo())
    adapter.reset(seed=0)
    out = adapter.step({"agent": np.array([[3.0, -4.0]], np.float32)})
    np.testing.assert_array_equal(out.obs["agent"].obs, [[1.0, 0.0]])


def _empty_cells(own_view):
    return (own_view.sum(axis=-1) == 0).ravel()


def test_tictactoe_turns_masks_and_final_rewards():
    adapter = AECAdapter(tictactoe_v3.env())
    spec = adapter.spec
    assert spec.turn_based and spec.agents == ("player_1", "player_2")
    g = spec.group("player")
    assert g.has_action_mask and g.obs_space.shape == (3, 3, 2)
    obs, _ = adapter.reset(seed=0)
    # player_1 takes 0, 1, 2 (top row), player_2 takes 3, 4.
    moves = [0, 3, 1, 4, 2]
    for i, move in enumerate(moves):
        group = obs["player"]
        mover = i % 2
        assert group.alive.tolist() == [mover == 0, mover == 1]
        np.testing.assert_array_equal(group.action_mask[mover], _empty_cells(group.obs[mover]))
        assert group.action_mask[1 - mover].all()  # a waiting agent's row is all True
        actions = np.zeros(2, np.int64)
        actions[mover] = move
        out = adapter.step({"player": actions})
        tr = out.transition["player"]
        if i < len(moves) - 1:
            np.testing.assert_array_equal(tr.reward, [0, 0])
            assert not tr.terminated.any() and out.episode is None
            # the waiting player sees the board from its side
            assert out.obs["player"].obs[1 - mover].sum() == i + 1
        obs = out.obs
    np.testing.assert_array_equal(tr.reward, [1, -1])
    assert tr.terminated.tolist() == [True, True] and not tr.truncated.any()
    np.testing.assert_array_equal(tr.final_obs[0][0, :, 0], [1, 1, 1])  # player_1's final view: its row
    assert out.episode.returns == {"player_1": 1.0, "player_2": -1.0} and out.episode.length == 5
    assert obs["player"].alive.tolist() == [True, False] and obs["player"].obs.sum() == 0  # new game


def _open_columns(own_view):
    return own_view[0].sum(axis=-1) == 0  # connect four: the top cell of the column is free


@pytest.mark.parametrize(
    ("make", "legal_of"), [(tictactoe_v3.env, _empty_cells), (connect_four_v3.env, _open_columns)]
)
def test_random_games_exactly_one_alive(make, legal_of):
    adapter = AECAdapter(make())
    obs, _ = adapter.reset(seed=3)
    rng = np.random.default_rng(3)
    games, totals = 0, []
    while games < 20:
        group = obs["player"]
        assert group.alive.sum() == 1
        mover = int(group.alive.argmax())
        legal = np.flatnonzero(group.action_mask[mover])
        np.testing.assert_array_equal(group.action_mask[mover], legal_of(group.obs[mover]))
        actions = np.zeros(2, np.int64)
        actions[mover] = rng.choice(legal)
        out = adapter.step({"player": actions})
        if out.episode is not None:
            games += 1
            totals.append(sum(out.episode.returns.values()))
            assert out.transition["player"].terminated.all()
        obs = out.obs
    assert totals == [0.0] * 20  # zero-sum: win/loss +1/-1 or a draw


class GoalEnv(gymnasium.Env):
    """Goal-conditioned toy: position += action; success when |pos - goal| < 0.5; horizon 3."""

    observation_space = spaces.Dict(
        {
            "observation": spaces.Box(-10, 10, (3,), np.float64),
            "achieved_goal": spaces.Box(-10, 10, (2,), np.float64),
            "desired_goal": spaces.Box(-10, 10, (2,), np.float64),
        }
    )
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def _obs(self):
        return {
            "observation": np.array([*self.pos, self.t]),
            "achieved_goal": self.pos.copy(),
            "desired_goal": self.goal,
        }

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.goal, self.t = np.zeros(2), self.np_random.uniform(-2, 2, 2), 0
        return self._obs(), {}

    def step(self, action):
        self.pos = self.pos + action
        self.t += 1
        success = float(np.linalg.norm(self.pos - self.goal) < 0.5)
        return self._obs(), success - 1.0, False, self.t >= 3, {"is_success": success}


def test_goal_dict_flattening_and_achieved_goals():
    adapter = GymAdapter(GoalEnv())
    g = adapter.spec.group("agent")
    assert g.goal == (3, 5) and g.obs_space.shape == (5,) and g.obs_space.dtype == np.float32
    obs, _ = adapter.reset(seed=1)
    goal = obs["agent"].obs[0, 3:5].copy()
    np.testing.assert_array_equal(obs["agent"].obs[0, :3], [0, 0, 0])
    for t in range(3):
        out = adapter.step({"agent": np.array([[0.5, -0.25]], np.float32)})
        if t < 2:
            np.testing.assert_allclose(
                out.obs["agent"].obs[0], [0.5 * (t + 1), -0.25 * (t + 1), t + 1, *goal]
            )
            np.testing.assert_allclose(out.achieved_goal["agent"][0], [0.5 * (t + 1), -0.25 * (t + 1)])
            assert not out.final_achieved_goal["agent"].any()
    np.testing.assert_allclose(out.transition["agent"].final_obs[0], [1.5, -0.75, 3, *goal])
    np.testing.assert_allclose(out.final_achieved_goal["agent"][0], [1.5, -0.75])
    np.testing.assert_array_equal(out.achieved_goal["agent"][0], [0, 0])  # the new episode starts at 0
    success = float(np.linalg.norm(np.array([1.5, -0.75]) - goal) < 0.5)
    assert out.episode.info == {"truncated": 1.0, "is_success": success}


def test_unsupported_observation_space_names_the_fix():
    class TextObs(gymnasium.Env):
        observation_space = spaces.Text(8)
        action_space = spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            return "hi", {}

    with pytest.raises(ValueError, match="Supported: Box .* Discrete, MultiDiscrete, MultiBinary, Tuple and Dict"):
        GymAdapter(TextObs())


@pytest.mark.parametrize("make", [functools.partial(simple_spread_v3.parallel_env, render_mode="rgb_array")])
def test_render_returns_rgb_frame(make):
    adapter = ParallelAdapter(make())
    adapter.reset(seed=0)
    frame = adapter.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    adapter.close()


class MaskInInfoEnv(gymnasium.Env):
    """One agent, Discrete(3), the mask in ``info`` (action ``t % 3`` forbidden); ends after 5 steps."""

    observation_space = spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = spaces.Discrete(3)

    def _info(self):
        mask = np.ones(3, np.int8)
        mask[self.t % 3] = 0
        return {"action_mask": mask}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, self.np_random.random()], np.float32), self._info()

    def step(self, action):
        self.t += 1
        return np.array([self.t, action], np.float32), float(action), self.t >= 5, False, self._info()


@pytest.mark.parametrize("make", [
    lambda: gymnasium.make("CartPole-v1", max_episode_steps=15),
    lambda: gymnasium.make("Pendulum-v1", max_episode_steps=12),
    lambda: __import__("envs.bit_flip", fromlist=["BitFlipEnv"]).BitFlipEnv(n_bits=3),
    MaskInInfoEnv,
])
def test_gym_adapter_fast_path_equals_the_generic_parallel_adapter(make):
    # GymAdapter steps the Gymnasium env directly; the generic path goes through the one-agent
    # parallel env. Same seeds and actions must give identical buffers and episode statistics.
    fast = GymAdapter(make())
    generic = ParallelAdapter(fast._env.__class__(make()), {"agent": ["agent_0"]}, use_state=False)
    assert fast.spec == generic.spec
    rng = np.random.default_rng(0)
    group = fast.spec.groups[0]
    obs_f, _ = fast.reset(seed=3)
    obs_g, _ = generic.reset(seed=3)
    np.testing.assert_array_equal(obs_f["agent"].obs, obs_g["agent"].obs)
    episodes = 0
    for _ in range(60):
        if group.discrete:
            allowed = (np.flatnonzero(obs_f["agent"].action_mask[0]) if group.has_action_mask
                       else np.arange(group.action_space.n))
            action = np.array([rng.choice(allowed)])
        else:
            action = rng.uniform(-3, 3, size=(1, *group.action_shape)).astype(np.float32)  # beyond the bounds: clipped
        sf = fast.step({"agent": action})
        sg = generic.step({"agent": action})
        for a, b in zip(sf, sg):
            if isinstance(a, dict):
                for k in a:
                    for x, y in zip(a[k], b[k]):
                        np.testing.assert_array_equal(x, y)
            elif isinstance(a, np.ndarray) or a is None:
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b
        obs_f = sf.obs
        episodes += sf.episode is not None
    assert episodes >= 2


def test_discrete_and_tuple_observations_are_one_hot_and_concatenated():
    """FrozenLake (Discrete(16)): one-hot of the state; Blackjack (Tuple of three Discrete): three one-hots side
    by side (32 + 11 + 2); rock-paper-scissors (PettingZoo, Discrete(4), no callable state()): one-hot per agent."""
    import gymnasium

    from marl.env.make import make_adapter

    lake = make_adapter("FrozenLake-v1", {"is_slippery": False})
    obs, _ = lake.reset(0)
    np.testing.assert_array_equal(obs["agent"].obs[0], np.eye(16, dtype=np.float32)[0])  # the start cell
    step = lake.step({"agent": np.array([2])})  # right
    np.testing.assert_array_equal(step.obs["agent"].obs[0], np.eye(16, dtype=np.float32)[1])

    jack = make_adapter("Blackjack-v1")
    obs, _ = jack.reset(3)
    raw, _ = gymnasium.make("Blackjack-v1").reset(seed=3)
    expected = np.concatenate([np.eye(32)[raw[0]], np.eye(11)[raw[1]], np.eye(2)[raw[2]]]).astype(np.float32)
    np.testing.assert_array_equal(obs["agent"].obs[0], expected)
    assert jack.spec.groups[0].obs_space.shape == (45,)

    rps = make_adapter("pettingzoo.classic.rps_v2")
    obs, _ = rps.reset(0)
    assert rps.spec.state_shape is None and obs["player"].obs.shape == (2, 4)
    step = rps.step({"player": np.array([0, 2])})  # rock, scissors: each sees the other's move
    np.testing.assert_array_equal(step.obs["player"].obs, np.eye(4, dtype=np.float32)[[2, 0]])


def test_dict_observations_are_flattened_and_masks_still_recognized():
    from pettingzoo.utils.env import ParallelEnv

    class DictObs(ParallelEnv):
        metadata = {"name": "dict_obs"}
        possible_agents = ["a_0"]

        def observation_space(self, agent):
            return spaces.Dict({"pos": spaces.Box(-1, 1, (2,)), "cell": spaces.Discrete(3)})

        def action_space(self, agent):
            return spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            self.agents = list(self.possible_agents)
            return {"a_0": {"pos": np.array([0.5, -0.5], np.float32), "cell": 2}}, {"a_0": {}}

        def step(self, actions):
            self.agents = []
            obs = {"a_0": {"pos": np.zeros(2, np.float32), "cell": 0}}
            return obs, {"a_0": 1.0}, {"a_0": True}, {"a_0": False}, {"a_0": {}}

    adapter = ParallelAdapter(DictObs())
    obs, _ = adapter.reset(0)
    # gymnasium orders Dict keys alphabetically: cell (one-hot of 3), then pos
    np.testing.assert_array_equal(obs["a"].obs[0], np.array([0, 0, 1, 0.5, -0.5], np.float32))
    from marl.env.make import make_adapter

    c4 = make_adapter("pettingzoo.classic.connect_four_v3")
    assert c4.spec.groups[0].has_action_mask  # Dict(observation, action_mask) keeps its meaning

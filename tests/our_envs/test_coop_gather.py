"""coop_gather: PettingZoo API, seeding, action masks, agent death, shared rewards, learnability."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from envs import coop_gather
from envs._grid import free_cells_connected

STAY, UP, DOWN, LEFT, RIGHT = range(5)


def decode_state(env: coop_gather.CoopGatherEnv) -> dict[str, np.ndarray]:
    """The four ``[size, size]`` planes of ``env.state()``."""
    n = env.size
    walls, hazards, resources, agents = env.state().reshape(4, n, n).astype(bool)
    return {"walls": walls, "hazards": hazards, "resources": resources, "agents": agents}


def position(env: coop_gather.CoopGatherEnv, obs: np.ndarray) -> tuple[int, int]:
    """The agent's ``(row, col)`` read from its observation."""
    r, c = np.rint(obs[-3:-1] * (env.size - 1)).astype(int)
    return int(r), int(c)


def scene(size: int = 5) -> dict[str, np.ndarray]:
    """Empty ``size`` x ``size`` grids for walls, hazards and resources."""
    return {k: np.zeros((size, size), dtype=bool) for k in ("walls", "hazards", "resources")}


def masked_random_actions(infos: dict, agents: list[str], rng: np.random.Generator) -> dict[str, int]:
    return {a: int(rng.choice(np.flatnonzero(infos[a]["action_mask"]))) for a in agents}


def greedy_actions(env: coop_gather.CoopGatherEnv, obs: dict) -> dict[str, int]:
    """Scripted oracle: step along a shortest hazard-free path to the nearest resource (BFS)."""
    planes = decode_state(env)
    blocked = planes["walls"] | planes["hazards"]
    actions = {}
    for a in env.agents:
        start = position(env, obs[a])
        parent: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
        queue, action = deque([start]), STAY
        while queue:
            cell = queue.popleft()
            if planes["resources"][cell]:
                while parent[cell] != start and parent[cell] is not None:
                    cell = parent[cell]
                delta = np.subtract(cell, start)
                action = int(np.flatnonzero((coop_gather.ACTION_STEPS == delta).all(axis=1))[0])
                break
            for step in coop_gather.ACTION_STEPS[1:]:
                nxt = (cell[0] + int(step[0]), cell[1] + int(step[1]))
                if (
                    0 <= nxt[0] < env.size
                    and 0 <= nxt[1] < env.size
                    and not blocked[nxt]
                    and nxt not in parent
                ):
                    parent[nxt] = cell
                    queue.append(nxt)
        actions[a] = action
    return actions


# ---------------------------------------------------------------------- API and seeding
@pytest.mark.parametrize("shared_reward", [True, False])
def test_pettingzoo_parallel_api(shared_reward: bool) -> None:
    parallel_api_test(coop_gather.parallel_env(shared_reward=shared_reward), num_cycles=100)


def test_pettingzoo_parallel_seed() -> None:
    parallel_seed_test(lambda: coop_gather.parallel_env(n_agents=4), num_cycles=50)


@pytest.mark.parametrize("seed", [0, 42])
def test_same_seed_same_episode(seed: int, assert_same_episodes) -> None:
    assert_same_episodes(lambda: coop_gather.parallel_env(), seed, n_steps=80)


# ---------------------------------------------------------------------- layouts and observations
def test_layouts_keep_safe_cells_connected_and_counts_exact() -> None:
    env = coop_gather.parallel_env(size=7, n_hazards=5, n_resources=6, wall_density=0.2)
    obs, _ = env.reset(seed=0)
    for _ in range(30):
        planes = decode_state(env)
        assert planes["walls"].sum() == round(0.2 * 49) and planes["hazards"].sum() == 5
        assert planes["resources"].sum() == 6
        assert free_cells_connected(planes["walls"] | planes["hazards"])
        assert not np.any(planes["resources"] & (planes["walls"] | planes["hazards"]))
        starts = {position(env, o) for o in obs.values()}
        assert len(starts) == env.n_agents
        assert not any(planes["walls"][s] or planes["hazards"][s] or planes["resources"][s] for s in starts)
        obs, _ = env.reset()


def test_observation_matches_naive_windows(window_oracle) -> None:
    env = coop_gather.parallel_env(n_agents=4, size=6, view=5, n_hazards=3)
    obs, infos = env.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(15):
        planes = decode_state(env)
        living = {a: position(env, obs[a]) for a in env.agents}
        for a, pos in living.items():
            others = np.zeros((6, 6))
            for b, other in living.items():
                if b != a:
                    others[other] = 1.0
            expected = np.concatenate(
                [
                    window_oracle(planes["walls"], pos, 5, 1.0).ravel(),
                    window_oracle(planes["resources"], pos, 5, 0.0).ravel(),
                    window_oracle(planes["hazards"], pos, 5, 0.0).ravel(),
                    window_oracle(others, pos, 5, 0.0).ravel(),
                    [pos[0] / 5, pos[1] / 5, planes["resources"].sum() / env.n_resources],
                ]
            )
            np.testing.assert_allclose(obs[a], expected, rtol=1e-6)
            assert obs[a] in env.observation_space(a)
        if not env.agents:
            break
        obs, _, _, _, infos = env.step(masked_random_actions(infos, env.agents, rng))


# ---------------------------------------------------------------------- action masks
def test_action_mask_equals_brute_force_and_masked_moves_do_nothing() -> None:
    env = coop_gather.parallel_env(n_agents=3, size=6, wall_density=0.3, n_hazards=2, max_cycles=30)
    rng = np.random.default_rng(0)
    n_masked = 0
    for seed in range(8):
        obs, infos = env.reset(seed=seed)
        while env.agents:
            walls = decode_state(env)["walls"]
            for a in env.agents:
                pos = position(env, obs[a])
                expected = [1]
                for step in coop_gather.ACTION_STEPS[1:]:
                    r, c = pos[0] + int(step[0]), pos[1] + int(step[1])
                    expected.append(int(0 <= r < env.size and 0 <= c < env.size and not walls[r, c]))
                mask = infos[a]["action_mask"]
                assert mask.dtype == np.int8 and mask.shape == (5,)
                np.testing.assert_array_equal(mask, expected)
            # half of the time take a masked move when there is one: it must act as "stay"
            actions, masked = {}, {}
            for a in env.agents:
                invalid = np.flatnonzero(infos[a]["action_mask"] == 0)
                if len(invalid) and rng.random() < 0.5:
                    actions[a] = int(rng.choice(invalid))
                    masked[a] = position(env, obs[a])
                else:
                    actions[a] = int(rng.choice(np.flatnonzero(infos[a]["action_mask"])))
            obs, _, _, _, infos = env.step(actions)
            for a, before in masked.items():
                assert position(env, obs[a]) == before
                n_masked += 1
    assert n_masked > 20


# ---------------------------------------------------------------------- death and rewards
def test_hazard_death_removes_agent_while_others_continue() -> None:
    env = coop_gather.parallel_env(n_agents=3, size=5, n_resources=2, n_hazards=1, wall_density=0.0)
    grids = scene()
    grids["hazards"][1, 1] = True
    grids["resources"][4, 4] = grids["resources"][0, 4] = True
    env.reset(options={**grids, "starts": [(1, 0), (3, 1), (2, 2)]})
    obs, rewards, terminated, truncated, infos = env.step(
        {"agent_0": RIGHT, "agent_1": STAY, "agent_2": STAY}
    )
    assert rewards == {"agent_0": -1.0, "agent_1": 0.0, "agent_2": 0.0}
    assert terminated == {"agent_0": True, "agent_1": False, "agent_2": False}
    assert not any(truncated.values()) and not infos["agent_0"]["is_success"]
    assert env.agents == ["agent_1", "agent_2"]
    # agent_1 at (3, 1) no longer sees agent_0 at (1, 1) (window offset (-2, 0)) but sees agent_2 at (2, 2)
    others = obs["agent_1"][75:100].reshape(5, 5)
    assert others[0, 2] == 0.0 and others[1, 3] == 1.0
    obs, rewards, terminated, *_ = env.step({"agent_1": RIGHT, "agent_2": RIGHT})
    assert set(rewards) == {"agent_1", "agent_2"} and not any(terminated.values())


def run_collection(shared_reward: bool) -> tuple[dict, dict, dict, dict]:
    """Two agents step onto one resource together, a third takes another; one resource remains."""
    env = coop_gather.parallel_env(
        n_agents=3, size=5, n_resources=3, n_hazards=0, wall_density=0.0, shared_reward=shared_reward
    )
    grids = scene()
    grids["resources"][2, 2] = grids["resources"][0, 1] = grids["resources"][4, 4] = True
    env.reset(options={**grids, "starts": [(2, 1), (2, 3), (0, 0)]})
    first = env.step({"agent_0": RIGHT, "agent_1": LEFT, "agent_2": RIGHT})
    return first[1], first[2], first[4], decode_state(env)["resources"]


def test_resource_rewards_shared_and_per_agent() -> None:
    rewards, terminated, _, resources = run_collection(shared_reward=True)
    assert rewards == {"agent_0": 2.0, "agent_1": 2.0, "agent_2": 2.0}  # two resources collected by the team
    assert not any(terminated.values())
    assert resources.sum() == 1 and resources[4, 4]
    rewards, *_ = run_collection(shared_reward=False)
    assert rewards == {"agent_0": 0.5, "agent_1": 0.5, "agent_2": 1.0}


def test_collecting_the_last_resource_ends_the_episode_with_success() -> None:
    env = coop_gather.parallel_env(n_agents=2, size=5, n_resources=1, n_hazards=0, wall_density=0.0)
    grids = scene()
    grids["resources"][0, 1] = True
    env.reset(options={**grids, "starts": [(0, 0), (4, 4)]})
    _, rewards, terminated, truncated, infos = env.step({"agent_0": RIGHT, "agent_1": UP})
    assert rewards == {"agent_0": 1.0, "agent_1": 1.0}
    assert terminated == {"agent_0": True, "agent_1": True} and not any(truncated.values())
    assert all(i["is_success"] for i in infos.values()) and env.agents == []


def test_truncation_at_max_cycles() -> None:
    env = coop_gather.parallel_env(
        n_agents=2, size=5, n_resources=1, n_hazards=0, wall_density=0.0, max_cycles=4
    )
    grids = scene()
    grids["resources"][4, 4] = True
    env.reset(options={**grids, "starts": [(0, 0), (0, 1)]})
    for t in range(4):
        _, rewards, terminated, truncated, infos = env.step({"agent_0": STAY, "agent_1": STAY})
        assert rewards == {"agent_0": 0.0, "agent_1": 0.0} and not any(terminated.values())
        assert all(truncated.values()) == (t == 3)
    assert env.agents == [] and not any(i["is_success"] for i in infos.values())


# ---------------------------------------------------------------------- learnability
def mean_team_return(policy: str, episodes: int, seed: int) -> float:
    env = coop_gather.parallel_env()
    rng = np.random.default_rng(seed)
    totals = []
    for episode in range(episodes):
        obs, infos = env.reset(seed=seed + episode)
        total = 0.0
        while env.agents:
            if policy == "random":
                actions = masked_random_actions(infos, env.agents, rng)
            else:
                actions = greedy_actions(env, obs)
            obs, rewards, _, _, infos = env.step(actions)
            total += sum(rewards.values())
        totals.append(total)
    return float(np.mean(totals))


def test_random_policy_scores_far_below_a_scripted_one() -> None:
    random_return = mean_team_return("random", episodes=40, seed=0)
    greedy_return = mean_team_return("greedy", episodes=40, seed=0)
    # greedy collects every resource (6 resources x 3 agents sharing) without dying
    assert greedy_return == pytest.approx(18.0)
    assert random_return < 0.35 * greedy_return


@pytest.mark.slow
def test_a_small_policy_gradient_learner_beats_random() -> None:
    """REINFORCE with a value baseline and masked logits (shared parameters) beats the random policy."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra threads only add contention
    try:
        late_returns = train_reinforce(torch)
    finally:
        torch.set_num_threads(threads)
    random_return = mean_team_return("random", episodes=100, seed=1000)
    assert np.mean(late_returns) > 2.0 * random_return


def train_reinforce(torch) -> list[float]:
    """Train for 60 iterations of 16 episodes; return the team returns of the last 10 iterations."""
    torch.manual_seed(0)
    env = coop_gather.parallel_env()
    obs_dim = env.observation_space("agent_0").shape[0]
    net = torch.nn.Sequential(
        torch.nn.Linear(obs_dim, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 6),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    gamma, seed, late_returns = 0.95, 1000, []
    for iteration in range(60):
        rows: list[tuple[np.ndarray, int, np.ndarray, float]] = []
        for _ in range(16):
            obs, infos = env.reset(seed=seed)
            seed += 1
            trajectories: dict[str, list] = {a: [] for a in env.possible_agents}
            total = 0.0
            while env.agents:
                names = list(env.agents)
                x = torch.as_tensor(np.stack([obs[a] for a in names]))
                mask = torch.as_tensor(np.stack([infos[a]["action_mask"] for a in names])).bool()
                with torch.no_grad():
                    logits = net(x)[:, :5].masked_fill(~mask, -1e9)
                    actions = torch.distributions.Categorical(logits=logits).sample().numpy()
                next_obs, rewards, _, _, infos = env.step({a: int(actions[k]) for k, a in enumerate(names)})
                for k, a in enumerate(names):
                    trajectories[a].append((obs[a], int(actions[k]), mask[k].numpy(), rewards[a]))
                total += sum(rewards.values())
                obs = next_obs
            if iteration >= 50:
                late_returns.append(total)
            for steps in trajectories.values():
                ret = 0.0
                for o, a, m, r in reversed(steps):
                    ret = r + gamma * ret
                    rows.append((o, a, m, ret))
        o, a, m, g = (torch.as_tensor(np.array(col)) for col in zip(*rows, strict=True))
        out = net(o)
        value, logits = out[:, 5], out[:, :5].masked_fill(~m.bool(), -1e9)
        dist = torch.distributions.Categorical(logits=logits)
        advantage = (g.float() - value).detach()
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        loss = (
            -(dist.log_prob(a) * advantage).mean()
            + 0.5 * ((g.float() - value) ** 2).mean()
            - 0.01 * dist.entropy().mean()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return late_returns


def test_render_rgb_array() -> None:
    env = coop_gather.parallel_env(
        n_agents=2, size=5, n_resources=1, n_hazards=1, wall_density=0.0, render_mode="rgb_array"
    )
    grids = scene()
    grids["hazards"][0, 0] = True
    grids["resources"][4, 4] = True
    env.reset(options={**grids, "starts": [(2, 2), (1, 3)]})
    image = env.render()
    assert image.dtype == np.uint8 and image.shape == (80, 80, 3)
    np.testing.assert_array_equal(image[8, 8], (210, 40, 40))  # hazard
    np.testing.assert_array_equal(image[4 * 16 + 8, 4 * 16 + 8], (230, 190, 30))  # resource
    np.testing.assert_array_equal(image[2 * 16 + 8, 2 * 16 + 8], coop_gather.AGENT_COLOURS[0])
    np.testing.assert_array_equal(image[1 * 16 + 8, 3 * 16 + 8], coop_gather.AGENT_COLOURS[1])
    np.testing.assert_array_equal(image[2 * 16 + 8, 0 * 16 + 8], (235, 235, 235))  # empty floor
    assert coop_gather.parallel_env().render() is None

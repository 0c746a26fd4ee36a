"""grid_nav: PettingZoo API, seeding, layouts, both frames, observation oracles, rewards."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from envs import grid_nav
from envs._grid import free_cells_connected

FRAMES_AND_MODES = [(f, m) for f in grid_nav.FRAMES for m in grid_nav.OBS_MODES]
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3  # world actions


def decode_state(env: grid_nav.GridNavEnv) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Walls ``[size, size]`` and per-agent ``on_grid, pos, goal, heading`` read back from ``env.state()``."""
    n = env.size
    state = env.state()
    walls = state[: n * n].reshape(n, n).astype(bool)
    agents = []
    for block in state[n * n :].reshape(env.n_agents, 9):
        coords = np.rint(block[1:5] * (n - 1)).astype(int)
        agents.append(
            {
                "on_grid": bool(block[0]),
                "pos": (int(coords[0]), int(coords[1])),
                "goal": (int(coords[2]), int(coords[3])),
                "heading": int(np.argmax(block[5:])),
            }
        )
    return walls, agents


def open_env(**kwargs: object) -> grid_nav.GridNavEnv:
    """A 5x5 grid without random walls."""
    params = {"size": 5, "view": 5, "wall_density": 0.0}
    params.update(kwargs)
    return grid_nav.GridNavEnv(**params)


def planes(obs: np.ndarray, view: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split a vector observation into wall, goal, others planes ``[view, view]`` and the offset ``[2]``."""
    n = view * view
    return (
        obs[:n].reshape(view, view),
        obs[n : 2 * n].reshape(view, view),
        obs[2 * n : 3 * n].reshape(view, view),
        obs[-2:],
    )


# ---------------------------------------------------------------------- API and seeding
@pytest.mark.parametrize(("frame", "obs_mode"), FRAMES_AND_MODES)
def test_pettingzoo_parallel_api(frame: str, obs_mode: str) -> None:
    env = grid_nav.parallel_env(n_agents=3, frame=frame, obs_mode=obs_mode, collision_penalty=0.1)
    parallel_api_test(env, num_cycles=100)


@pytest.mark.parametrize(("frame", "obs_mode"), FRAMES_AND_MODES)
def test_pettingzoo_parallel_seed(frame: str, obs_mode: str) -> None:
    parallel_seed_test(
        lambda: grid_nav.parallel_env(n_agents=3, frame=frame, obs_mode=obs_mode), num_cycles=50
    )


@pytest.mark.parametrize("seed", [0, 42])
@pytest.mark.parametrize("frame", grid_nav.FRAMES)
def test_same_seed_same_episode(seed: int, frame: str, assert_same_episodes) -> None:
    assert_same_episodes(lambda: grid_nav.parallel_env(n_agents=2, frame=frame), seed, n_steps=80)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_both_frames_draw_the_same_task(seed: int) -> None:
    world = grid_nav.parallel_env(n_agents=4, frame="world")
    ego = grid_nav.parallel_env(n_agents=4, frame="egocentric", obs_mode="image")
    for _ in range(3):  # also the unseeded resets that follow
        world.reset(seed=seed if _ == 0 else None)
        ego.reset(seed=seed if _ == 0 else None)
        np.testing.assert_array_equal(world.state(), ego.state())
    assert world.max_cycles == ego.max_cycles == 4 * world.size


# ---------------------------------------------------------------------- layouts
@pytest.mark.parametrize(("size", "density", "n_agents"), [(9, 0.15, 2), (7, 0.4, 8), (3, 0.5, 1)])
def test_layouts_connected_with_exact_wall_count(size: int, density: float, n_agents: int) -> None:
    env = grid_nav.parallel_env(size=size, wall_density=density, n_agents=n_agents)
    env.reset(seed=0)
    for _ in range(30):
        env.reset()
        walls, agents = decode_state(env)
        assert walls.sum() == round(density * size * size)
        assert free_cells_connected(walls)
        cells = [a["pos"] for a in agents] + [a["goal"] for a in agents]
        assert len(set(cells)) == 2 * n_agents  # starts and goals all distinct
        assert not any(walls[c] for c in cells)


def test_layout_changes_between_resets() -> None:
    env = grid_nav.parallel_env()
    env.reset(seed=3)
    first = env.state()
    env.reset()
    assert not np.array_equal(first, env.state())


# ---------------------------------------------------------------------- observations
@pytest.mark.parametrize("seed", [0, 5])
def test_world_vector_obs_matches_naive_window(seed: int, window_oracle) -> None:
    env = grid_nav.parallel_env(n_agents=4, size=8, view=5, wall_density=0.3)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(10):
        walls, agents = decode_state(env)
        for i, name in enumerate(env.possible_agents):
            if name not in obs:
                continue
            pos, goal = agents[i]["pos"], agents[i]["goal"]
            others = np.zeros_like(walls, dtype=float)
            for j, other in enumerate(agents):
                if j != i and other["on_grid"]:
                    others[other["pos"]] = 1.0
            goal_grid = np.zeros_like(walls, dtype=float)
            goal_grid[goal] = 1.0
            wall_plane, goal_plane, others_plane, offset = planes(obs[name], 5)
            np.testing.assert_array_equal(wall_plane, window_oracle(walls, pos, 5, 1.0))
            np.testing.assert_array_equal(goal_plane, window_oracle(goal_grid, pos, 5, 0.0))
            np.testing.assert_array_equal(others_plane, window_oracle(others, pos, 5, 0.0))
            np.testing.assert_allclose(offset, (np.array(goal) - pos) / 7, rtol=1e-6)
            assert obs[name] in env.observation_space(name)
        if not env.agents:
            break
        obs = env.step({a: int(rng.integers(4)) for a in env.agents})[0]


def egocentric_scene(heading: int) -> dict[str, object]:
    """A 5x5 scene around agent_0 at the centre, rotated clockwise by ``heading`` quarter turns.

    Seen from the agent (heading up): walls two cells ahead and one cell ahead-right, its goal one
    cell behind-left, agent_1 two cells behind (agent_1's goal in a corner ahead-left).
    """
    walls = np.zeros((5, 5), dtype=bool)
    walls[0, 2] = walls[1, 3] = True
    marks = np.zeros((5, 5), dtype=int)
    marks[3, 1] = 1  # goal of agent_0
    marks[4, 2] = 2  # start of agent_1
    marks[0, 0] = 3  # goal of agent_1
    walls, marks = np.rot90(walls, -heading), np.rot90(marks, -heading)
    cell = {k: tuple(int(x) for x in np.argwhere(marks == k)[0]) for k in (1, 2, 3)}
    return {
        "walls": walls,
        "starts": [(2, 2), cell[2]],
        "goals": [cell[1], cell[3]],
        "headings": [heading, 0],
    }


def test_egocentric_obs_invariant_to_heading_and_hand_checked() -> None:
    ego_obs, world_obs = [], []
    for heading in range(4):
        scene = egocentric_scene(heading)
        ego_obs.append(open_env(n_agents=2, frame="egocentric").reset(options=scene)[0]["agent_0"])
        world_obs.append(open_env(n_agents=2, frame="world").reset(options=scene)[0]["agent_0"])
    expected_walls = np.zeros((5, 5))
    expected_walls[0, 2] = expected_walls[1, 3] = 1.0
    expected_goal = np.zeros((5, 5))
    expected_goal[3, 1] = 1.0
    expected_others = np.zeros((5, 5))
    expected_others[4, 2] = 1.0
    for obs in ego_obs:
        wall_plane, goal_plane, others_plane, offset = planes(obs, 5)
        np.testing.assert_array_equal(wall_plane, expected_walls)
        np.testing.assert_array_equal(goal_plane, expected_goal)
        np.testing.assert_array_equal(others_plane, expected_others)
        np.testing.assert_allclose(offset, [0.25, -0.25])  # one behind, one left, over size - 1 = 4
    # the world frame sees four different pictures of the same scene
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(world_obs[a], world_obs[b])
    # heading "right": what is ahead in the world is to the right in the world window
    wall_plane, _, _, offset = planes(world_obs[1], 5)
    assert wall_plane[2, 4] == 1.0 and wall_plane[3, 3] == 1.0
    np.testing.assert_allclose(offset, [-0.25, -0.25])


def test_egocentric_image_invariant_to_heading() -> None:
    images = [
        open_env(n_agents=2, frame="egocentric", obs_mode="image", cell_pixels=3).reset(
            options=egocentric_scene(h)
        )[0]
        for h in range(4)
    ]
    for image in images[1:]:
        np.testing.assert_array_equal(image["agent_0"], images[0]["agent_0"])
    assert images[0]["agent_0"].shape == (15, 15, 3)


@pytest.mark.parametrize("frame", grid_nav.FRAMES)
def test_image_obs_agrees_with_vector_obs(frame: str) -> None:
    vec_env = grid_nav.parallel_env(n_agents=3, size=9, frame=frame, obs_mode="vector")
    img_env = grid_nav.parallel_env(n_agents=3, size=9, frame=frame, obs_mode="image", cell_pixels=2)
    vec_obs, _ = vec_env.reset(seed=11)
    img_obs, _ = img_env.reset(seed=11)
    rng = np.random.default_rng(0)
    checked_out_of_view = 0
    for _ in range(12):
        for name in vec_obs:
            wall_plane, goal_plane, others_plane, offset = planes(vec_obs[name], 5)
            image = img_obs[name]
            assert image.dtype == np.uint8 and image.shape == (10, 10, 3)
            np.testing.assert_array_equal(image[::2, ::2], image[1::2, 1::2])  # 2x2 blocks per cell
            cells = image[::2, ::2].astype(int)
            np.testing.assert_array_equal(cells[..., 0], wall_plane * 255)
            np.testing.assert_array_equal(cells[..., 2], others_plane * 255)
            d = np.rint(offset * 8).astype(int)
            expected_green = goal_plane * 255
            if np.all(np.abs(d) <= 2):
                assert goal_plane[d[0] + 2, d[1] + 2] == 1.0
            else:
                checked_out_of_view += 1
                marker = np.clip(d, -2, 2) + 2
                expected_green[marker[0], marker[1]] = grid_nav.GOAL_MARKER
            np.testing.assert_array_equal(cells[..., 1], expected_green)
        if not vec_env.agents:
            break
        actions = {a: int(rng.integers(4)) for a in vec_env.agents}
        vec_obs = vec_env.step(actions)[0]
        img_obs = img_env.step(actions)[0]
    assert checked_out_of_view > 0


# ---------------------------------------------------------------------- dynamics
@pytest.mark.parametrize("heading", range(4))
def test_egocentric_forward_backward_and_rotations(heading: int) -> None:
    env = open_env(n_agents=1, frame="egocentric")
    scene = {"starts": [(2, 2)], "goals": [(0, 0)], "headings": [heading]}
    step = grid_nav._grid.HEADING_STEPS[heading]

    env.reset(options=scene)
    env.step({"agent_0": grid_nav.FORWARD})
    agent = decode_state(env)[1][0]
    assert agent["pos"] == (2 + step[0], 2 + step[1]) and agent["heading"] == heading

    env.reset(options=scene)
    env.step({"agent_0": grid_nav.BACKWARD})
    agent = decode_state(env)[1][0]
    assert agent["pos"] == (2 - step[0], 2 - step[1]) and agent["heading"] == heading

    for action, expected in (
        (grid_nav.ROTATE_CW, (heading + 1) % 4),
        (grid_nav.ROTATE_CCW, (heading + 3) % 4),
    ):
        env.reset(options=scene)
        env.step({"agent_0": action})
        agent = decode_state(env)[1][0]
        assert agent["pos"] == (2, 2) and agent["heading"] == expected


def test_egocentric_forward_into_wall_stays() -> None:
    walls = np.zeros((5, 5), dtype=bool)
    walls[2, 3] = True
    env = open_env(n_agents=1, frame="egocentric")
    env.reset(options={"walls": walls, "starts": [(2, 2)], "goals": [(0, 0)], "headings": [1]})
    env.step({"agent_0": grid_nav.FORWARD})
    assert decode_state(env)[1][0]["pos"] == (2, 2)
    env.reset(options={"starts": [(0, 2)], "goals": [(4, 4)], "headings": [0]})  # off the grid
    env.step({"agent_0": grid_nav.FORWARD})
    assert decode_state(env)[1][0]["pos"] == (0, 2)


@pytest.mark.parametrize(
    ("action", "delta", "heading"),
    [(UP, (-1, 0), 0), (DOWN, (1, 0), 2), (LEFT, (0, -1), 3), (RIGHT, (0, 1), 1)],
)
def test_world_moves_set_heading(action: int, delta: tuple[int, int], heading: int) -> None:
    env = open_env(n_agents=1, frame="world")
    env.reset(options={"starts": [(2, 2)], "goals": [(0, 0)], "headings": [(heading + 2) % 4]})
    env.step({"agent_0": action})
    agent = decode_state(env)[1][0]
    assert agent["pos"] == (2 + delta[0], 2 + delta[1]) and agent["heading"] == heading


def test_reaching_goal_gives_plus_one_and_removes_agent() -> None:
    env = open_env(n_agents=2, frame="world")
    env.reset(options={"starts": [(2, 2), (4, 4)], "goals": [(2, 3), (0, 0)]})
    obs, rewards, terminated, truncated, infos = env.step({"agent_0": RIGHT, "agent_1": UP})
    assert rewards == {"agent_0": 1.0, "agent_1": -0.01}
    assert terminated == {"agent_0": True, "agent_1": False}
    assert truncated == {"agent_0": False, "agent_1": False}
    assert infos["agent_0"]["is_success"] and not infos["agent_1"]["is_success"]
    assert env.agents == ["agent_1"]
    assert set(obs) == {"agent_0", "agent_1"}  # the final observation of the finished agent comes once
    obs, rewards, *_ = env.step({"agent_1": UP})
    assert set(obs) == set(rewards) == {"agent_1"}
    assert not decode_state(env)[1][0]["on_grid"]


def test_truncation_at_max_cycles() -> None:
    env = open_env(n_agents=2, max_cycles=3)
    env.reset(options={"starts": [(2, 2), (4, 4)], "goals": [(0, 0), (0, 4)]})
    total = {"agent_0": 0.0, "agent_1": 0.0}
    for t in range(3):
        _, rewards, terminated, truncated, infos = env.step({"agent_0": DOWN, "agent_1": DOWN})
        for a in total:
            total[a] += rewards[a]
        assert not any(terminated.values())
        assert all(truncated.values()) == (t == 2)
    assert env.agents == []
    assert not any(i["is_success"] for i in infos.values())
    assert total == pytest.approx({"agent_0": -0.03, "agent_1": -0.03})
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


def test_collision_penalty_when_sharing_a_cell() -> None:
    env = open_env(n_agents=3, collision_penalty=0.5)
    env.reset(options={"starts": [(2, 1), (2, 3), (0, 0)], "goals": [(4, 4), (4, 0), (0, 4)]})
    _, rewards, *_ = env.step({"agent_0": RIGHT, "agent_1": LEFT, "agent_2": DOWN})
    assert rewards == pytest.approx({"agent_0": -0.51, "agent_1": -0.51, "agent_2": -0.01})


def test_vector_goal_offset_leads_a_greedy_walker_home() -> None:
    """With no walls, following the sign of the observed offset reaches the goal in |dr| + |dc| steps."""
    env = grid_nav.parallel_env(n_agents=1, size=9, wall_density=0.0)
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        steps = 0
        distance = int(np.abs(np.rint(obs["agent_0"][-2:] * 8)).sum())
        while env.agents:
            dr, dc = np.rint(obs["agent_0"][-2:] * 8)
            action = (DOWN if dr > 0 else UP) if dr != 0 else (RIGHT if dc > 0 else LEFT)
            obs, rewards, terminated, *_ = env.step({"agent_0": action})
            steps += 1
        assert terminated["agent_0"] and rewards["agent_0"] == 1.0 and steps == distance


# ---------------------------------------------------------------------- misc
def test_render_rgb_array() -> None:
    env = grid_nav.parallel_env(n_agents=2, size=6, render_mode="rgb_array")
    env.reset(seed=0)
    image = env.render()
    assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
    _, agents = decode_state(env)
    for i, agent in enumerate(agents):
        r, c = agent["pos"]
        corner = image[r * 16 + 3, c * 16 + 3]  # inside the marker, away from the heading pip
        np.testing.assert_array_equal(corner, grid_nav.AGENT_COLOURS[i])
    assert grid_nav.parallel_env().render() is None


def test_bad_arguments_and_actions_raise() -> None:
    with pytest.raises(ValueError, match="frame"):
        grid_nav.parallel_env(frame="body")
    with pytest.raises(ValueError, match="view"):
        grid_nav.parallel_env(view=4)
    with pytest.raises(ValueError, match="n_agents"):
        grid_nav.parallel_env(n_agents=9)
    env = grid_nav.parallel_env(n_agents=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="agent_1"):
        env.step({"agent_0": 0})
    with pytest.raises(ValueError, match="Discrete"):
        env.step({"agent_0": 4, "agent_1": 0})

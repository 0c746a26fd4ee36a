"""envs.batched_mpe against mpe2: same state + same actions -> same observations, rewards, ends.

The oracle is mpe2's own parallel env. Each check loads mpe2 worlds into copies of the
batched env, steps both with the same random actions and compares every output; after
mpe2's episodes end, mpe2 resets (its random starts differ from ours) and its new world is
loaded again. Also: auto-reset, seeding, spaces, errors.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
import pytest

from envs import batched_mpe
from envs.batched_mpe import BatchedMPE

SCENARIOS = list(batched_mpe.SCENARIOS)
TOL = 1e-5


def mpe2_env(scenario: str, continuous: bool, seed: int, max_cycles: int = 25, **kwargs: Any) -> Any:
    """mpe2's parallel env of ``scenario``, reset with ``seed``."""
    module = importlib.import_module(f"mpe2.{batched_mpe.scenario_class(scenario).mpe2_name}")
    env = module.parallel_env(continuous_actions=continuous, max_cycles=max_cycles, **kwargs)
    env.reset(seed=seed)
    return env


def random_actions(env: BatchedMPE, rng: np.random.Generator, low: float = 0.0, high: float = 1.0) -> dict:
    """Uniform actions per group: ``int [E, A_g]`` or ``float32 [E, A_g, act_dim]`` in ``[low, high)``."""
    actions = {}
    for g, names in env.groups.items():
        space = env.action_space(names[0])
        if env.continuous_actions:
            shape = (env.num_envs, len(names), space.shape[0])
            actions[g] = rng.uniform(low, high, shape).astype(np.float32)
        else:
            actions[g] = rng.integers(0, space.n, (env.num_envs, len(names)))
    return actions


def per_agent(env: BatchedMPE, batched: dict[str, np.ndarray], copy: int) -> dict[str, np.ndarray]:
    """Copy ``copy``'s entries of ``{group: [E, A_g, ...]}`` as ``{agent: [...]}``."""
    return {a: batched[g][copy, k] for g, names in env.groups.items() for k, a in enumerate(names)}


def assert_obs_equal(env: BatchedMPE, ours: dict[str, np.ndarray], copy: int, theirs: dict) -> None:
    got = per_agent(env, ours, copy)
    assert set(theirs) == set(env.agents)
    for a in env.agents:
        assert got[a].dtype == np.float32 and theirs[a].dtype == np.float32
        np.testing.assert_allclose(got[a], theirs[a], rtol=0, atol=TOL, err_msg=a)


def stack_agents(env: BatchedMPE, per_copy: list[dict]) -> dict[str, np.ndarray]:
    """``{agent: value}`` dicts of each copy as ``{group: [E, A_g, ...]}``."""
    return {g: np.array([[d[a] for a in names] for d in per_copy]) for g, names in env.groups.items()}


def assert_close_over_steps(
    name: str, ours: list[dict], theirs: list[dict], atol: float, rtol: float = 0.0
) -> None:
    """Per group, the ``[T, E, A_g, ...]`` stacks of both runs agree; a failure names the first bad step."""
    for g in ours[0]:
        a = np.stack([o[g] for o in ours])
        b = np.stack([t[g] for t in theirs])
        assert a.shape == b.shape, (name, g, a.shape, b.shape)
        bad = ~np.isclose(a, b, rtol=rtol, atol=atol)
        if bad.any():
            t = int(np.argwhere(bad)[0][0])
            raise AssertionError(f"{name}[{g!r}] differs first at step {t}: ours {a[t]}, mpe2 {b[t]}")


def run_against_mpe2(
    scenario: str,
    continuous: bool,
    n_steps: int,
    seeds: tuple[int, ...] = (0, 1),
    max_cycles: int = 25,
    low: float = 0.0,
    high: float = 1.0,
    **kwargs: Any,
) -> int:
    """Step ``len(seeds)`` mpe2 envs and one batched env with a copy per mpe2 env; compare all outputs.

    Returns the number of episodes that ended (so callers can check the run crossed resets).
    """
    refs = [mpe2_env(scenario, continuous, s, max_cycles, **kwargs) for s in seeds]
    env = batched_mpe.make(
        scenario, len(seeds), continuous_actions=continuous, max_cycles=max_cycles, **kwargs
    )
    env.reset(seed=123)
    for i, ref in enumerate(refs):
        env.set_state_from_mpe2(i, ref)
    rng = np.random.default_rng(sum(seeds) + n_steps)
    ours: dict[str, list] = {"obs": [], "reward": [], "terminated": [], "truncated": []}
    theirs: dict[str, list] = {k: [] for k in ours}
    ended = 0
    for t in range(n_steps):
        if t % 10 == 0:
            np.testing.assert_allclose(env.state(), [ref.state() for ref in refs], rtol=0, atol=TOL)
        actions = random_actions(env, rng, low, high)
        out = env.step(actions)
        mpe2_out = [ref.step(per_agent(env, actions, i)) for i, ref in enumerate(refs)]
        for k, ours_k in zip(ours, (out.final_obs, out.reward, out.terminated, out.truncated), strict=True):
            ours[k].append(ours_k)
            theirs[k].append(stack_agents(env, [o[list(ours).index(k)] for o in mpe2_out]))
        assert out.done_envs.tolist() == [not ref.agents for ref in refs]
        for i in np.flatnonzero(out.done_envs):
            ended += 1
            obs, _ = refs[i].reset()
            env.set_state_from_mpe2(i, refs[i])
            assert_obs_equal(env, env.observe(), i, obs)
    assert all(o.dtype == np.float32 for step in ours["obs"] + ours["reward"] for o in step.values())
    assert all(t.dtype == np.float32 for step in theirs["obs"] for t in step.values())
    assert_close_over_steps("obs", ours["obs"], theirs["obs"], TOL)
    assert_close_over_steps("reward", ours["reward"], theirs["reward"], TOL, rtol=1e-6)
    for k in ("terminated", "truncated"):
        assert_close_over_steps(k, ours[k], theirs[k], 0)
    return ended


# ---------------------------------------------------------------------- faithfulness
@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_matches_mpe2_for_1000_random_steps(scenario: str, continuous: bool) -> None:
    assert run_against_mpe2(scenario, continuous, n_steps=1000) == 2 * 40


KWARG_CASES = [
    ("simple_spread", {"N": 5, "local_ratio": 0.2}),
    ("simple_spread", {"N": 4, "num_agent_neighbors": 2, "num_landmark_neighbors": 3}),
    ("simple_spread", {"N": 2, "num_agent_neighbors": 3}),  # more slots than others: zero padding
    ("simple_spread", {"curriculum": True}),  # stage 0: no collision penalty
    ("simple_tag", {"curriculum": True}),  # stage 0: prey at half speed and accel
    ("simple_reference", {"local_ratio": 0.8}),
    ("simple_adversary", {"N": 3}),
    ("simple_adversary", {"N": 4, "num_agent_neighbors": 2, "num_landmark_neighbors": 2}),
    ("simple_tag", {"num_good": 2, "num_adversaries": 2, "num_obstacles": 3}),
    (
        "simple_tag",
        {
            "num_good": 3,
            "num_adversaries": 4,
            "num_obstacles": 1,
            "num_agent_neighbors": 3,
            "num_landmark_neighbors": 2,
        },
    ),
    ("simple_tag", {"num_obstacles": 0}),
]


@pytest.mark.parametrize(("scenario", "kwargs"), KWARG_CASES, ids=lambda x: str(x))
def test_matches_mpe2_with_scenario_kwargs(scenario: str, kwargs: dict) -> None:
    for continuous in (False, True):
        assert (
            run_against_mpe2(scenario, continuous, n_steps=150, seeds=(3, 4), max_cycles=30, **kwargs) == 10
        )


def test_mpe2_curriculum_stage_cannot_change() -> None:
    """mpe2 1.1.1: ``BaseScenario.curriculum_stage`` is a property whose setter does nothing, so
    ``set_curriculum_stage`` leaves mpe2 at stage 0. The batched env does change stage (what
    mpe2 documents); the test below checks later stages against the stage's meaning instead."""
    ref = mpe2_env("simple_tag", False, 0, curriculum=True)
    ref.unwrapped.set_curriculum_stage(2)
    assert ref.unwrapped.curriculum_stage == 0  # if this fails, mpe2 was fixed: compare stages with it


@pytest.mark.parametrize("scenario", ["simple_spread", "simple_tag"])
def test_last_curriculum_stage_is_the_full_task(scenario: str) -> None:
    """At its last stage the curriculum env runs like one without curriculum (tag: from the next reset)."""
    staged = batched_mpe.make(scenario, 3, curriculum=True)
    staged.reset(seed=0)
    for _ in range(3):
        staged.advance_curriculum()
    assert staged.curriculum_stage == (1 if scenario == "simple_spread" else 2)
    a = flatten(rollout(staged, 4, 60))
    b = flatten(rollout(batched_mpe.make(scenario, 3), 4, 60))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    stage_0 = flatten(rollout(batched_mpe.make(scenario, 3, curriculum=True), 4, 60))
    assert not all(np.array_equal(x, y) for x, y in zip(stage_0, b, strict=True))


def test_continuous_actions_are_clipped_as_mpe2_clips_them() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for scenario in ("simple_reference", "simple_speaker_listener", "simple_tag"):
            run_against_mpe2(scenario, True, n_steps=60, seeds=(7,), low=-0.5, high=1.5)


def _on_landmarks(env: Any, steps: int | None = None) -> None:
    """Put every agent of an mpe2 simple_spread env on a landmark (and set its step counter)."""
    raw = env.unwrapped
    for agent, landmark in zip(raw.world.agents, raw.world.landmarks, strict=True):
        agent.state.p_pos = landmark.state.p_pos + 0.01
        agent.state.p_vel = np.zeros(2)
    if steps is not None:
        raw.steps = steps


@pytest.mark.parametrize("last_step", [False, True], ids=["terminated", "truncated_wins_on_last_step"])
def test_terminate_on_success_matches_mpe2(last_step: bool) -> None:
    ref = mpe2_env("simple_spread", False, seed=8, terminate_on_success=True)
    _on_landmarks(ref, steps=24 if last_step else 3)
    env = batched_mpe.make("simple_spread", 2, terminate_on_success=True)
    env.reset(seed=0)
    env.set_state_from_mpe2(1, ref)
    actions = {"agent": np.zeros((2, 3), dtype=np.int64)}
    obs, reward, terminated, truncated, _ = ref.step(per_agent(env, actions, 1))
    out = env.step(actions)
    assert all(terminated.values()) != last_step and all(truncated.values()) == last_step
    assert per_agent(env, out.terminated, 1) == terminated and per_agent(env, out.truncated, 1) == truncated
    assert out.done_envs.tolist() == [False, True]
    assert_obs_equal(env, out.final_obs, 1, obs)
    np.testing.assert_allclose(out.reward["agent"][1], [reward[a] for a in env.agents], atol=TOL)


def test_simple_tag_terminates_when_every_prey_is_caught() -> None:
    ref = mpe2_env("simple_tag", True, seed=9, num_good=2, terminate_on_success=True)
    world = ref.unwrapped.world
    world.agents[3].state.p_pos = world.agents[0].state.p_pos + 0.01
    world.agents[4].state.p_pos = world.agents[1].state.p_pos - 0.01
    env = batched_mpe.make("simple_tag", 1, continuous_actions=True, num_good=2, terminate_on_success=True)
    env.reset(seed=0)
    env.set_state_from_mpe2(0, ref)
    actions = {"adversary": np.zeros((1, 3, 5), np.float32), "agent": np.zeros((1, 2, 5), np.float32)}
    obs, reward, terminated, _, _ = ref.step(per_agent(env, actions, 0))
    out = env.step(actions)
    assert all(terminated.values()) and out.terminated["agent"].all() and not out.truncated["agent"].any()
    assert_obs_equal(env, out.final_obs, 0, obs)
    assert out.reward["adversary"][0].tolist() == [reward[a] for a in env.groups["adversary"]] == [20.0] * 3


# ---------------------------------------------------------------------- auto-reset
def test_auto_reset_truncates_one_copy_and_leaves_the_others_alone() -> None:
    seed, E = 11, 4
    env, twin = batched_mpe.make("simple_tag", E), batched_mpe.make("simple_tag", E)
    env.reset(seed=seed)
    twin.reset(seed=seed)
    ref = mpe2_env("simple_tag", False, seed=1)
    ref.unwrapped.steps = 24  # one step before max_cycles
    env.set_state_from_mpe2(2, ref)
    rng = np.random.default_rng(0)
    actions = random_actions(env, rng)
    out, twin_out = env.step(actions), twin.step(actions)
    mpe2_obs, _, terminated, truncated, _ = ref.step(per_agent(env, actions, 2))

    assert out.done_envs.tolist() == [False, False, True, False]
    for g in env.groups:
        assert out.truncated[g][:, 0].tolist() == [False, False, True, False]
        assert not out.terminated[g].any()
    assert all(truncated.values()) and not any(terminated.values())
    assert_obs_equal(env, out.final_obs, 2, mpe2_obs)  # the real last observation
    # the fresh start is copy 2's second draw: what a second reset of a twin seeded alike gives
    second_start = batched_mpe.make("simple_tag", E)
    second_start.reset(seed=seed)
    fresh = second_start.reset()
    others = [0, 1, 3]
    for g in env.groups:
        np.testing.assert_array_equal(out.obs[g][2], fresh[g][2])
        assert not np.allclose(out.obs[g][2], out.final_obs[g][2])
        np.testing.assert_array_equal(out.obs[g][others], out.final_obs[g][others])
        np.testing.assert_array_equal(out.obs[g][others], twin_out.obs[g][others])  # untouched
        np.testing.assert_array_equal(out.reward[g][others], twin_out.reward[g][others])
    # the reset copy runs a whole episode again; the others end at max_cycles as before
    for t in range(1, 26):
        done = env.step(random_actions(env, rng)).done_envs
        assert done.tolist() == ([True, True, False, True] if t == 24 else [False, False, t == 25, False])


def test_final_obs_is_obs_when_no_copy_ends() -> None:
    env = batched_mpe.make("simple_spread", 3)
    env.reset(seed=0)
    out = env.step(random_actions(env, np.random.default_rng(0)))
    assert not out.done_envs.any()
    assert out.final_obs["agent"] is out.obs["agent"]


# ---------------------------------------------------------------------- seeding
def rollout(env: BatchedMPE, seed: Any, n_steps: int) -> list:
    rng = np.random.default_rng(0)
    history: list = [env.reset(seed=seed)]
    for _ in range(n_steps):
        history.append(env.step(random_actions(env, rng)))
    return history


def flatten(history: list) -> list[np.ndarray]:
    out = []
    for item in history:
        parts = item if isinstance(item, tuple) else (item,)
        for part in parts:
            out.extend(part.values() if isinstance(part, dict) else [part])
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_seed_same_trajectories(scenario: str) -> None:
    a = flatten(rollout(batched_mpe.make(scenario, 3, continuous_actions=True), 5, 60))
    b = flatten(rollout(batched_mpe.make(scenario, 3, continuous_actions=True), 5, 60))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_seeds_give_different_starts_per_copy_and_copies_do_not_depend_on_num_envs() -> None:
    starts = batched_mpe.make("simple_spread", 4).reset(seed=0)["agent"]
    assert len({starts[i].tobytes() for i in range(4)}) == 4
    assert not np.array_equal(starts, batched_mpe.make("simple_spread", 4).reset(seed=1)["agent"])
    # copy i of an int seed is the same whatever the number of copies
    np.testing.assert_array_equal(starts[:2], batched_mpe.make("simple_spread", 2).reset(seed=0)["agent"])
    # one seed per copy
    listed = batched_mpe.make("simple_spread", 3).reset(seed=[7, 8, 7])["agent"]
    np.testing.assert_array_equal(listed[0], listed[2])
    assert not np.array_equal(listed[0], listed[1])
    np.testing.assert_array_equal(listed[1:2], batched_mpe.make("simple_spread", 1).reset(seed=[8])["agent"])
    # unseeded resets go on with the copies' generators
    env = batched_mpe.make("simple_spread", 2)
    first = env.reset(seed=3)["agent"]
    assert not np.array_equal(first, env.reset()["agent"])


def test_reset_draws_goals_and_positions_in_range() -> None:
    env = batched_mpe.make("simple_tag", 256, num_obstacles=3)
    env.reset(seed=0)
    state = env.observe()["adversary"][:, 0]  # [vel, pos, obstacle_rel, ...] of adversary_0
    pos, obstacles = state[:, 2:4], state[:, 4:10].reshape(-1, 3, 2) + state[:, None, 2:4]
    assert np.all(np.abs(pos) <= 1) and np.all(np.abs(obstacles) <= 0.9 + 1e-6)
    assert np.all(state[:, :2] == 0)
    env = batched_mpe.make("simple_reference", 512)
    env.reset(seed=0)
    colours = env.observe()["agent"][:, :, 8:11].reshape(-1, 3)
    counts = np.unique(colours.argmax(axis=1), return_counts=True)[1]
    assert len(counts) == 3 and counts.min() > 250  # all three goals drawn, about evenly


# ---------------------------------------------------------------------- spaces and API
@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize(
    ("scenario", "kwargs"), [(s, {}) for s in SCENARIOS] + KWARG_CASES, ids=lambda x: str(x)
)
def test_spaces_equal_mpe2s(scenario: str, continuous: bool, kwargs: dict) -> None:
    ref = mpe2_env(scenario, continuous, 0, **kwargs)
    env = batched_mpe.make(scenario, 2, continuous_actions=continuous, **kwargs)
    assert env.agents == ref.possible_agents
    assert [a for names in env.groups.values() for a in names] == env.agents
    for a in env.agents:
        assert env.observation_space(a) == ref.observation_space(a)
        assert env.action_space(a) == ref.action_space(a)
    assert env.state_space == ref.state_space
    obs = env.reset(seed=0)
    for g, names in env.groups.items():
        assert obs[g].shape == (2, len(names), env.observation_space(names[0]).shape[0])
    assert env.state().shape == (2, env.state_space.shape[0])


def test_groups_and_names() -> None:
    assert batched_mpe.make("simple_speaker_listener_v4", 1).groups == {
        "speaker": ["speaker_0"],
        "listener": ["listener_0"],
    }
    assert batched_mpe.make("simple_adversary_v3", 1).groups == {
        "adversary": ["adversary_0"],
        "agent": ["agent_0", "agent_1"],
    }
    assert batched_mpe.make("mpe2.simple_tag_v3", 1, num_good=2).groups["agent"] == ["agent_0", "agent_1"]
    assert batched_mpe.make("simple_spread", 1, max_cycles=7).max_cycles == 7


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown MPE scenario 'simple_pong'"):
        batched_mpe.make("simple_pong", 1)
    with pytest.raises(TypeError, match="num_good"):
        batched_mpe.make("simple_spread", 1, num_good=2)
    with pytest.raises(ValueError, match="local_ratio=1.5"):
        batched_mpe.make("simple_spread", 1, local_ratio=1.5)
    env = batched_mpe.make("simple_spread", 2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"agent": np.zeros((2, 3), dtype=np.int64)})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="no actions for group 'agent'"):
        env.step({})
    with pytest.raises(ValueError, match=r"expected int \[2, 3\]"):
        env.step({"agent": np.zeros((2, 2), dtype=np.int64)})
    with pytest.raises(ValueError, match=r"outside Discrete\(5\)"):
        env.step({"agent": np.full((2, 3), 5)})
    with pytest.raises(ValueError, match="mpe2 env has agents"):
        env.set_state_from_mpe2(0, mpe2_env("simple_spread", False, 0, N=4))
    with pytest.raises(ValueError, match="local_ratio=0.3"):
        env.set_state_from_mpe2(0, mpe2_env("simple_spread", False, 0, local_ratio=0.3))
    with pytest.raises(ValueError, match="continuous_actions=True"):
        env.set_state_from_mpe2(0, mpe2_env("simple_spread", True, 0))

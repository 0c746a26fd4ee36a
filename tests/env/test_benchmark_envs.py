"""The field's benchmark envs through marl/env/gym_multiagent.py: level-based foraging and the multi-robot
warehouse, the real packages (lbforaging 2.0, rware 2.0), no mock."""

import functools
import os
import sys

import numpy as np
import pytest

if os.environ.get("CI"):
    import lbforaging  # noqa: F401 - CI installs every extra: a missing one fails here, never skips
    import rware  # noqa: F401
else:
    pytest.importorskip("lbforaging", reason="the lbforaging extra is not installed (pip install -e .[lbforaging])")
    pytest.importorskip("rware", reason="the rware extra is not installed (pip install -e .[rware])")

from pettingzoo.test import parallel_api_test, parallel_seed_test  # noqa: E402

from marl.config import ConfigError, load_config  # noqa: E402
from marl.env.make import env_spec, make_adapter, make_raw_env  # noqa: E402
from marl.env.vector import make_vector_env  # noqa: E402

LBF = "lbforaging:Foraging-8x8-2p-2f-coop-v3"
RWARE = "rware:rware-tiny-2ag-v2"
NONE, LOAD = 0, 5  # lbforaging.foraging.environment.Action
NOOP, FORWARD = 0, 1  # rware.warehouse.Action


@pytest.mark.parametrize("env_id, kwargs, obs_dim, n_actions", [
    (LBF, {}, 12, 6), (RWARE, {}, 71, 5), ("lbforaging:Foraging-15x15-3p-4f-v3", {}, 21, 6),
    ("lbforaging:Foraging-15x15-3p-4f-v3", {"max_num_food": 5}, 24, 6),  # the paper's 15x15-3p-5f
])
def test_spaces_agents_and_state(env_id, kwargs, obs_dim, n_actions):
    # LBF obs: (row, col, level) per food, then per agent (self first); RWARE: its flattened 71-vector
    spec = make_adapter(env_id, kwargs).spec
    n = len(spec.agents)
    assert spec.agents == tuple(f"agent_{i}" for i in range(n)) and [g.name for g in spec.groups] == ["agent"]
    group = spec.groups[0]
    assert group.obs_space.shape == (obs_dim,) and group.action_space.n == n_actions
    assert spec.state_shape == (n * obs_dim,)  # the agents' observations concatenated


@pytest.mark.parametrize("env_id", [LBF, RWARE])
def test_pettingzoo_api_and_seed_tests_pass(env_id):
    parallel_api_test(make_raw_env(env_id), num_cycles=100)
    parallel_seed_test(functools.partial(make_raw_env, env_id), num_cycles=50)


@pytest.mark.parametrize("env_id", [LBF, RWARE])
def test_a_seeded_reset_repeats_and_another_seed_differs(env_id):
    a, b = make_adapter(env_id, use_state=True), make_adapter(env_id, use_state=True)
    (obs1, state1), (obs2, state2) = a.reset(3), b.reset(3)
    np.testing.assert_array_equal(state1, state2)
    np.testing.assert_array_equal(obs1["agent"].obs, obs2["agent"].obs)
    np.testing.assert_array_equal(state1, np.concatenate(obs1["agent"].obs))
    for previous in range(40):  # whatever episode came before (lbforaging 2.0 let it leak into the next reset)
        b.reset(previous)
        np.testing.assert_array_equal(b.reset(3)[0]["agent"].obs, obs1["agent"].obs)
    other = [b.reset(seed)[0]["agent"].obs for seed in (4, 5, 6)]
    assert any(not np.array_equal(o, obs1["agent"].obs) for o in other)


def lbf_scene(env):
    """A hand-set LBF scene: agent 0 (level 1) and agent 1 (level 2) on both sides of a level-3 food at (3, 3);
    a second level-3 food at (6, 6). 6 food levels spawned in all (the reward normalizer)."""
    env.reset(seed=0)
    lbf = env.env.unwrapped
    lbf.field[:] = 0
    lbf.field[3, 3] = lbf.field[6, 6] = 3
    lbf._food_spawned = 6
    for player, position, level in zip(lbf.players, [(3, 2), (3, 4)], [1, 2], strict=True):
        player.position, player.level = position, level
    lbf._gen_valid_moves()
    return lbf


def test_lbf_joint_load_rewards_each_agent_by_its_level_share():
    """LBF's rule: a food of level F loaded by adjacent agents whose levels sum to L >= F gives agent i
    level_i * F / (L * total food spawned). Here F=3, L=1+2, total 6: 1/6 and 1/3; the food is gone."""
    env = make_raw_env(LBF)
    lbf = lbf_scene(env)
    _, rewards, terms, truncs, _ = env.step({"agent_0": LOAD, "agent_1": LOAD})
    assert rewards == pytest.approx({"agent_0": 1 / 6, "agent_1": 1 / 3})
    assert lbf.field[3, 3] == 0 and not any(terms.values()) and not any(truncs.values())


def test_lbf_a_load_below_the_food_level_fails():
    env = make_raw_env(LBF)
    lbf = lbf_scene(env)
    _, rewards, _, _, _ = env.step({"agent_0": NONE, "agent_1": LOAD})  # level 2 alone on a level-3 food
    assert rewards == {"agent_0": 0.0, "agent_1": 0.0} and lbf.field[3, 3] == 3


def test_lbf_collecting_every_food_terminates_and_the_step_limit_truncates():
    env = make_raw_env(LBF)
    lbf = lbf_scene(env)
    lbf.field[6, 6] = 0  # only the food between the agents is left
    _, rewards, terms, truncs, _ = env.step({"agent_0": LOAD, "agent_1": LOAD})
    assert sum(rewards.values()) == pytest.approx(0.5) and all(terms.values()) and not any(truncs.values())
    assert env.agents == []
    env.reset(seed=0)
    for t in range(50):  # EPyMARL's LBF episode limit, the registered default
        _, _, terms, truncs, _ = env.step({"agent_0": NONE, "agent_1": NONE})
        assert all(truncs.values()) == (t == 49) and not any(terms.values())


def test_rware_delivering_a_requested_shelf_rewards_the_carrier():
    """RWARE (individual rewards): a requested shelf brought onto a goal cell gives its carrier 1."""
    from rware.warehouse import Direction

    env = make_raw_env(RWARE)
    env.reset(seed=0)
    w = env.env.unwrapped
    (gx, gy), shelf, carrier = w.goals[0], w.request_queue[0], w.agents[0]
    carrier.x, carrier.y, carrier.dir = gx, gy - 1, Direction.DOWN  # one cell above the goal, facing it
    carrier.carrying_shelf, shelf.x, shelf.y = shelf, gx, gy - 1
    w.agents[1].x, w.agents[1].y = 0, 0
    w._recalc_grid()
    _, rewards, terms, truncs, _ = env.step({"agent_0": FORWARD, "agent_1": NOOP})
    assert rewards == {"agent_0": 1.0, "agent_1": 0.0} and shelf not in w.request_queue
    assert not any(terms.values()) and not any(truncs.values())


def test_rware_ends_only_by_its_time_limit():
    adapter = make_adapter(RWARE, {"max_steps": 5})
    adapter.reset(0)
    for t in range(5):
        step = adapter.step({"agent": np.zeros(2, np.int64)})
    tr = step.transition["agent"]
    assert tr.truncated.all() and not tr.terminated.any() and step.episode.length == 5


@pytest.mark.parametrize("env_id", [LBF, RWARE])
def test_snapshot_restore_continues_exactly(env_id):
    factory = functools.partial(make_adapter, env_id, {})
    rng = np.random.default_rng(0)

    def run(venv, steps):
        out = []
        for _ in range(steps):
            step = venv.step({"agent": rng.integers(0, venv.spec.groups[0].action_space.n, (2, 2))})
            out.append((step.obs["agent"].obs.copy(), step.transition["agent"].reward.copy(), len(step.episodes)))
        return out

    with make_vector_env(factory, 2, backend="sync") as venv:
        venv.reset(5)
        run(venv, 37)
        snaps, state = venv.snapshot(), rng.bit_generator.state
        expected = run(venv, 30)
    rng.bit_generator.state = state
    with make_vector_env(factory, 2, backend="sync") as other:
        other.restore(snaps)
        got = run(other, 30)
    for (o1, r1, e1), (o2, r2, e2) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        assert e1 == e2


@pytest.mark.parametrize("config, steps", [("configs/lbf_8x8_2p_2f_coop_mappo.yaml", 1000),
                                           ("configs/rware_tiny_2ag_mappo.yaml", 1000)])
def test_two_iterations_of_mappo_with_a_central_critic(config, steps, make_config):
    from marl.api import train

    cfg = make_config(config, "env.num_envs=4", "env.backend=sync", "algo.num_steps=125", "model.hidden=[32]",
                      f"total_env_steps={steps}", "eval.interval=0", "eval.episodes=2", "eval.num_envs=2",
                      "checkpoint.interval=0")
    assert cfg.model.critic == "central"
    result = train(cfg)
    assert result["env_steps"] == steps and np.isfinite(result["final_eval"]["ep_return"])


@pytest.mark.parametrize("algo", ["vdn", "qmix"])
def test_value_decomposition_configs_train_on_lbf(algo, make_config):
    """The shipped LBF configs train a few gradient steps; QMIX's mixer reads both agents' observations (LBF has
    no state(): 2 x 12 features)."""
    from marl.api import train
    from marl.off_policy.team import mixer_state_dim

    cfg = make_config(f"configs/lbf_8x8_2p_2f_coop_{algo}.yaml", "env.num_envs=2", "total_env_steps=400",
                      "algo.learning_starts=200", "algo.batch_size=16", "algo.buffer_size=400", "eval.interval=0",
                      "eval.episodes=2", "eval.num_envs=2", "checkpoint.interval=0")
    spec = env_spec(cfg)
    assert spec.state_shape is None and mixer_state_dim(spec, cfg.algo) == 24
    result = train(cfg)
    assert result["env_steps"] == 400 and result["grad_steps"] == 20  # one per 10 env steps after the warm-up
    assert 0.0 <= result["final_eval"]["ep_return"] <= 1.0


def test_lbf_action_masks_are_the_valid_actions_of_each_player():
    """env.kwargs.action_masks: a move into a food or off the grid and a load without an adjacent food are
    masked; NONE never is. The scene by hand, then the adapter's spec and the refusal for rware."""
    env = make_raw_env(LBF, {"action_masks": True})
    _, infos = env.reset(seed=0)
    assert set(infos) == {"agent_0", "agent_1"} and infos["agent_0"]["action_mask"].dtype == bool
    lbf = lbf_scene(env)
    lbf.players[1].position = (0, 7)  # the top-right corner, no food beside it
    lbf._gen_valid_moves()
    _, _, _, _, infos = env.step({"agent_0": NONE, "agent_1": NONE})
    #                                          NONE  NORTH  SOUTH  WEST   EAST   LOAD
    assert infos["agent_0"]["action_mask"].tolist() == [True, True, True, True, False, True]  # food east, at (3, 3)
    assert infos["agent_1"]["action_mask"].tolist() == [True, False, True, True, False, False]
    assert "action_mask" not in make_raw_env(LBF).reset(seed=0)[1]["agent_0"]  # off by default (EPyMARL's protocol)
    cfg = load_config(None, [f"env.id={LBF}", "env.kwargs={action_masks: true}"])
    assert all(g.has_action_mask for g in env_spec(cfg).groups)
    with pytest.raises(ValueError, match="does not say which actions are valid"):
        make_raw_env(RWARE, {"action_masks": True})
    with pytest.raises(ValueError, match="true or false"):
        make_raw_env(LBF, {"action_masks": "yes"})


@pytest.mark.parametrize("backend", ["sync", "subprocess"])
def test_a_truncated_lbf_step_keeps_the_final_masks_for_the_bootstrap(backend):
    """At the 50-step limit the replay row's next_action_mask is the mask of the final observation (the env's
    own valid actions there), not all actions and not the next episode's first mask."""
    from marl.off_policy.replay import replay_rows

    factory = functools.partial(make_adapter, LBF, {"action_masks": True})
    raw = make_raw_env(LBF, {"action_masks": True})  # the same episode, stepped beside it for the oracle
    raw.reset(seed=3)
    with make_vector_env(factory, 1, backend=backend) as venv:
        before, _ = venv.reset(seed=[3])
        for t in range(50):
            actions = {"agent": np.array([[2, 4]])}  # SOUTH, EAST: into the corner, then blocked
            _, _, _, _, infos = raw.step({"agent_0": 2, "agent_1": 4})
            step = venv.step(actions)
            g_before, g_after = before["agent"], step.obs["agent"]
            rows = replay_rows(g_before, actions["agent"], step.transition["agent"], g_after, None, None)
            before = step.obs
        assert step.transition["agent"].truncated.all()
        expected = np.stack([infos[a]["action_mask"] for a in ("agent_0", "agent_1")])
        assert not expected.all()  # blocked moves are masked at the end: the check can fail
        np.testing.assert_array_equal(step.transition["agent"].final_action_mask[0], expected)
        np.testing.assert_array_equal(rows["next_action_mask"][0], expected)


class AlwaysLoad:
    """A scripted LBF policy: every player loads at every step (a stuck greedy Q policy's typical choice)."""

    def initial_hidden(self):
        return None

    def act(self, obs, action_masks=None):
        return dict.fromkeys(obs, LOAD)


def test_lbf_stuck_counts_a_policy_that_never_moves():
    """bench/lbf_stuck.py's episode walk: a policy that only loads never moves (one joint position), takes 50 LOADs
    per player, and with epsilon 1 every action is random and valid (masks on): the players move."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("lbf_stuck", Path(__file__).parents[2] / "bench" / "lbf_stuck.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    play = script.play
    rng = np.random.default_rng(0)
    total, actions, distinct = play(AlwaysLoad(), make_raw_env(LBF), 0, 0.0, rng)
    assert distinct == 1 and actions == [LOAD] * 100 and total == 0.0
    env = make_raw_env(LBF, {"action_masks": True})
    _, actions, distinct = play(AlwaysLoad(), env, 0, 1.0, rng)
    assert distinct > 2 and actions.count(LOAD) < len(actions) / 3


def test_unknown_ids_name_close_ones():
    with pytest.raises(ValueError, match="Did you mean: lbforaging:Foraging-8x8-2p-2f-coop-v3"):
        make_raw_env("lbforaging:Foraging-8x8-2p-2f-coop-v2")
    with pytest.raises(ConfigError, match="env.id"):
        env_spec(load_config(None, ["env.id=rware:rware-tiny-2ag-v1", "env.kwargs={}"]))
    with pytest.raises(ValueError, match="use lbforaging:Foraging-8x8-2p-2f-coop-v3"):
        make_raw_env("Foraging-8x8-2p-2f-coop-v3")  # registered (the package is imported here), but unprefixed


@pytest.mark.parametrize("package, env_id", [("lbforaging", LBF), ("rware", RWARE)])
def test_a_missing_package_is_one_line_naming_the_extra(package, env_id, monkeypatch, tmp_path, capsys):
    from marl.cli import main

    monkeypatch.setitem(sys.modules, package, None)  # what an environment without the package gives on import
    with pytest.raises(ImportError, match=rf"pip install 'marl\[{package}\]'"):
        make_raw_env(env_id)
    assert main(["train", f"env.id={env_id}", "env.kwargs={}", f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"pip install 'marl[{package}]'" in err
    assert not (tmp_path / "run").exists()


def test_changing_only_the_env_id_names_the_leftover_default_kwargs():
    """`marl train env.id=...` keeps the embedded default's simple_spread kwargs: the error says to reset them."""
    from marl.config import DEFAULT_CONFIG

    with pytest.raises(ConfigError, match=r"env.kwargs=\{\}"):
        env_spec(load_config(DEFAULT_CONFIG, [f"env.id={LBF}"]))
    env_spec(load_config(DEFAULT_CONFIG, [f"env.id={LBF}", "env.kwargs={}"]))


def test_rendering_without_a_display_is_refused_with_the_fix():
    env = make_raw_env(LBF, render_mode="rgb_array")
    env.reset(seed=0)
    if os.environ.get("DISPLAY"):
        assert env.render().ndim == 3
    else:
        with pytest.raises(RuntimeError, match="needs a display.*xvfb-run"):
            env.render()


@pytest.mark.parametrize("env_id", [LBF, RWARE])
def test_resume_mid_episode_equals_the_uninterrupted_run(env_id, make_config, tmp_path):
    """3 iterations of 30 steps per copy (episodes of 50 / 40 steps: copies are mid-episode at every checkpoint)
    == 2 iterations, then a resume for 1 more: same parameters (the env copies are rebuilt from snapshots)."""
    import torch

    from marl import checkpoint as ckpt
    from marl.api import train

    config = "configs/lbf_8x8_2p_2f_coop_mappo.yaml"
    common = ["env.num_envs=2", "algo.num_steps=30", "model.hidden=[16]", "eval.interval=0", "eval.episodes=1",
              "eval.num_envs=1", "checkpoint.interval=0", f"env.id={env_id}",
              "env.kwargs={max_steps: 40}" if env_id == RWARE else "env.kwargs={}"]
    train(make_config(config, *common, "total_env_steps=180", run="full"))
    train(make_config(config, *common, "total_env_steps=120", run="split"))
    train(make_config(config, *common, "total_env_steps=180", f"resume={tmp_path / 'split'}", run="split"))
    a = ckpt.load(tmp_path / "full" / "checkpoints" / "latest.pt")
    b = ckpt.load(tmp_path / "split" / "checkpoints" / "latest.pt")
    assert a["counters"]["env_steps"] == b["counters"]["env_steps"] == 180
    for k, v in a["policy"]["net"].items():
        torch.testing.assert_close(b["policy"]["net"][k], v, rtol=0, atol=0, msg=f"parameter {k}")


def test_bench_lbf_tasks_are_the_papers_tasks():
    """bench/bench_lbf.py --task: every task of the paper makes an env with its grid, players, food count and sight,
    is found back from its env id and kwargs, and has the paper's cells for MAPPO, VDN and QMIX."""
    import importlib.util
    from pathlib import Path

    import gymnasium

    spec = importlib.util.spec_from_file_location("bench_lbf", Path(__file__).parents[2] / "bench" / "bench_lbf.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    TASKS, PUBLISHED, task_of = bench.TASKS, bench.PUBLISHED, bench.task_of  # noqa: N806
    for name, (env_id, overrides) in TASKS.items():
        kwargs = {o.split("=")[0].removeprefix("env.kwargs."): int(o.split("=")[1]) for o in overrides}
        size, players, foods = name.split("-")[:3]
        base = gymnasium.make(env_id, **kwargs).unwrapped
        base.reset(seed=0)
        assert base.field.shape == (int(size.split("x")[0]),) * 2, name
        assert len(base.players) == int(players[:-1]) and int((base.field > 0).sum()) == int(foods[:-1]), name
        assert base.sight == (2 if "-2s" in name else base.field.shape[0]), name
        assert base.force_coop == name.endswith("-c"), name
        assert task_of(env_id, kwargs) == name
        assert all((name, algo) in PUBLISHED for algo in ("mappo", "vdn", "qmix"))

"""The Python API (marl/api.py, marl/deploy.py): marl.train, marl.load, marl.evaluate, marl.compare.

Every run is tiny (a few hundred env steps, sync backend). The deploy tests compare actions against an
oracle: the same run's acting policy called directly on the arrays marl's own adapters make.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import gymnasium
import numpy as np
import pytest
import yaml
from gymnasium import spaces
from pettingzoo import ParallelEnv

import marl
from marl.api import load_policy
from marl.checkpoint import CheckpointError
from marl.config import ConfigError, load_config
from marl.deploy import DeployError
from marl.env import make as env_make
from marl.types import GroupObs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = {"log.tensorboard": False, "log.progress": False}
# CartPole PPO in 256 env steps: 2 copies x 32 steps, 4 iterations, one short evaluation at the end.
TINY_CARTPOLE = {"total_env_steps": 256, "env.num_envs": 2, "algo.update_epochs": 1, "eval.episodes": 1,
                 "eval.num_envs": 1, **QUIET}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class MatchBits(ParallelEnv):
    """Two agents each see a random bit as a one-hot pair and earn 1 for choosing it; 5 steps per episode."""

    metadata: ClassVar[dict] = {"name": "match_bits_v0"}

    def __init__(self, max_steps: int = 5, render_mode: str | None = None) -> None:
        self.possible_agents = ["bit_0", "bit_1"]
        self.agents: list[str] = []
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.np_random = np.random.default_rng()
        self._obs_space = spaces.Box(0.0, 1.0, (2,), np.float32)

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(2)

    def _observe(self) -> dict[str, np.ndarray]:
        self.bits = self.np_random.integers(0, 2, len(self.possible_agents))
        return {a: np.eye(2, dtype=np.float32)[b] for a, b in zip(self.possible_agents, self.bits, strict=True)}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        self.agents, self.t = list(self.possible_agents), 0
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        rewards = {a: float(actions[a] == b) for a, b in zip(self.possible_agents, self.bits, strict=True)}
        self.t += 1
        done = self.t >= self.max_steps
        obs = self._observe()
        terms = dict.fromkeys(self.agents, False)
        truncs = dict.fromkeys(self.agents, done)
        infos = {a: {} for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos


def tiny_parallel(tmp_path: Path, name: str, env, **extra) -> marl.Run:
    """A tiny PPO run on a two-agent parallel env, from a dict config."""
    config = {"algo": {"name": "ppo", "num_steps": 10, "num_minibatches": 2, "update_epochs": 1},
              "env": {"num_envs": 2}, "total_env_steps": 60, "eval": {"episodes": 2, "num_envs": 1}}
    return marl.train(config, env=env, run_dir=str(tmp_path / name), overrides=QUIET, **extra)


# --------------------------------------------------------------------------- marl.train
def test_train_from_path_dict_and_config_with_overrides(tmp_path):
    path = CONFIGS / "cartpole_ppo.yaml"
    by_path = marl.train(path, seed=1, algo__lr=3e-4, overrides={**TINY_CARTPOLE, "run_dir": str(tmp_path / "p")})
    as_dict = yaml.safe_load(path.read_text())
    by_dict = marl.train(as_dict, seed=1, algo__lr=3e-4, overrides={**TINY_CARTPOLE, "run_dir": str(tmp_path / "d")})
    by_config = marl.train(load_config(path), overrides=["seed=1", "algo.lr=3e-4", f"run_dir={tmp_path / 'c'}",
                                                         *(f"{k}={v}" for k, v in TINY_CARTPOLE.items())])
    for run in (by_path, by_dict, by_config):
        assert isinstance(run, marl.Run)
        saved = yaml.safe_load((run.run_dir / "config.yaml").read_text())
        assert (saved["seed"], saved["algo"]["lr"], saved["total_env_steps"]) == (1, 3e-4, 256)
        assert saved["algo"]["update_epochs"] == 1 and saved["env"]["id"] == "CartPole-v1"
        assert run.summary["env_steps"] == 256 and (run.run_dir / "checkpoints" / "best.pt").is_file()
        assert run.config.algo.lr == 3e-4
    # same config, same seed: the three spellings train the same run
    returns = {run.summary["final_eval"]["ep_return"] for run in (by_path, by_dict, by_config)}
    assert len(returns) == 1


def test_importable_env_class_is_recorded_by_module_and_qualname(tmp_path):
    run = tiny_parallel(tmp_path, "importable", MatchBits)
    env_id = yaml.safe_load((run.run_dir / "config.yaml").read_text())["env"]["id"]
    assert env_id == f"{MatchBits.__module__}:MatchBits"
    assert "env_note" not in run.summary
    assert env_id not in env_make._CALLABLES  # rebuilt by import, as `marl eval` does
    assert marl.load(run.run_dir).agents == ("bit_0", "bit_1")


def test_callable_env_ids(monkeypatch):
    import functools
    import sys
    import types

    from mpe2 import simple_spread_v3

    assert env_make.callable_env_id(MatchBits) == (f"{MatchBits.__module__}:MatchBits", True)
    # PettingZoo's parallel_env is made by a factory (qualname parallel_wrapper_fn.<locals>.par_fn)
    env_id, importable = env_make.callable_env_id(simple_spread_v3.parallel_env)
    assert (env_id, importable) == ("mpe2.simple_spread_v3:parallel_env", True)
    assert env_make.make_raw_env(env_id, {"N": 2}).possible_agents == ["agent_0", "agent_1"]
    assert env_make.callable_env_id(functools.partial(MatchBits, max_steps=3)) == (
        "unimportable:functools:partial", False)
    assert env_make.callable_env_id(lambda: MatchBits())[0] == (
        f"unimportable:{__name__}:test_callable_env_ids.<locals>.<lambda>")
    # a script's class, also held by multiprocessing's alias of the main module, is not importable elsewhere
    script = types.ModuleType("__mp_main__")
    script.MainBits = type("MainBits", (MatchBits,), {"__module__": "__main__"})
    monkeypatch.setitem(sys.modules, "__mp_main__", script)
    assert env_make.callable_env_id(script.MainBits) == ("unimportable:__main__:MainBits", False)


def test_env_class_defined_in_a_function_trains_and_must_be_passed_again(tmp_path, monkeypatch):
    class LocalBits(MatchBits):
        pass

    run = tiny_parallel(tmp_path, "local", LocalBits, env__backend="sync")
    assert run.summary["env_steps"] == 60
    text = (run.run_dir / "config.yaml").read_text()
    env_id = yaml.safe_load(text)["env"]["id"]
    assert env_id.startswith("unimportable:") and env_id.endswith("LocalBits")
    assert text.startswith("# NOTE:") and "pass it again as env=" in text.splitlines()[0]
    assert "pass it again" in run.summary["env_note"]
    assert "pass it again" in (run.run_dir / "summary.json").read_text()
    # another process knows nothing of the callable: one line naming the fix ...
    monkeypatch.setattr(env_make, "_CALLABLES", {})
    with pytest.raises(ConfigError, match="pass it again") as err:
        marl.load(run.run_dir)
    assert "\n" not in str(err.value)
    # ... and passing it again works, for loading, evaluating and resuming
    policy = marl.load(run.run_dir, env=LocalBits)
    assert marl.evaluate(policy, episodes=2)["episodes"] == 2
    resumed = marl.train(resume=str(run.run_dir), env=LocalBits, total_env_steps=80, overrides=QUIET)
    assert resumed.summary["env_steps"] == 80 and resumed.run_dir == run.run_dir


# --------------------------------------------------------------------------- marl.load: deploy on plain envs
@pytest.fixture(scope="module")
def spread_run(tmp_path_factory) -> Path:
    """A tiny simple_spread PPO run with observation normalization (the statistics must be applied, frozen)."""
    run = marl.train(CONFIGS / "simple_spread_ppo.yaml", run_dir=str(tmp_path_factory.mktemp("spread") / "run"),
                     total_env_steps=200, env__num_envs=2, env__backend="sync", algo__num_steps=50,
                     algo__update_epochs=1, algo__num_minibatches=2, eval__episodes=1, eval__num_envs=1,
                     overrides=QUIET)
    return run.run_dir


def oracle_actions(acting, obs: dict[str, GroupObs]) -> dict[str, np.ndarray]:
    """Actions of marl's own path: the acting policy on [E=1, A, ...] arrays, as evaluation calls it."""
    batched = {g: GroupObs(o.obs[None], o.alive[None], None if o.action_mask is None else o.action_mask[None])
               for g, o in obs.items()}
    out = acting.act(batched, None, deterministic=True, update_stats=False, with_value=False)
    return {g: a[0] for g, a in out.env_action.items()}


def test_deploy_on_a_plain_pettingzoo_loop_equals_marls_own_path(spread_run):
    from mpe2 import simple_spread_v3

    policy = marl.load(spread_run)
    acting, cfg, _ = load_policy(spread_run)
    assert acting.obs_norm, "the run normalizes observations; the test needs statistics to apply"
    env = simple_spread_v3.parallel_env(**cfg.env.kwargs)
    adapter = env_make.make_adapter(cfg.env.id, cfg.env.kwargs)
    obs, _ = env.reset(seed=3)
    adapter_obs, _ = adapter.reset(seed=3)
    steps = 0
    while env.agents:
        actions = policy.act(obs)
        expected = oracle_actions(acting, adapter_obs)
        group = acting.spec.groups[0]
        assert set(actions) == set(env.agents)
        assert [actions[a] for a in group.agents] == expected[group.name].tolist()
        np.testing.assert_array_equal(np.stack([obs[a] for a in group.agents]), adapter_obs[group.name].obs)
        obs, *_ = env.step(actions)
        adapter_obs = adapter.step({group.name: expected[group.name]}).obs
        steps += 1
    assert steps == cfg.env.kwargs["max_cycles"]
    # an agent absent from the dict is not alive: the others' actions do not change (one row per agent)
    obs, _ = env.reset(seed=4)
    full = policy.act(obs)
    assert policy.act({"agent_1": obs["agent_1"]}) == {"agent_1": full["agent_1"]}


def test_deploy_errors_name_the_fix(spread_run):
    policy = marl.load(spread_run)
    with pytest.raises(DeployError, match="unknown agent"):
        policy.act({"agent_9": np.zeros(18, np.float32)})
    with pytest.raises(DeployError, match="observation shape .* preprocessing"):
        policy.act({"agent_0": np.zeros(5, np.float32)})
    with pytest.raises(DeployError, match="pass \\{agent: observation\\}"):
        policy.act(np.zeros(18, np.float32))


@pytest.mark.parametrize("algo", ["ppo", "dqn", "sac"])
def test_deploy_on_a_gymnasium_env(tmp_path, algo):
    if algo == "ppo":  # with observation normalization: the frozen statistics must be applied
        run = marl.train(CONFIGS / "cartpole_ppo.yaml", run_dir=str(tmp_path / algo), norm__obs=True,
                         overrides=TINY_CARTPOLE)
    elif algo == "dqn":
        run = marl.train(CONFIGS / "cartpole_dqn.yaml", run_dir=str(tmp_path / algo), total_env_steps=300,
                         algo__learning_starts=100, algo__batch_size=16, algo__train_freq=50, algo__gradient_steps=2,
                         model__hidden=[16], eval__episodes=1, eval__num_envs=1, overrides=QUIET)
    else:  # continuous actions: scaled to the bounds
        run = marl.train(CONFIGS / "pendulum_sac.yaml", run_dir=str(tmp_path / algo), total_env_steps=120,
                         algo__learning_starts=100, algo__batch_size=16, model__hidden=[16], norm__obs=True,
                         eval__episodes=1, eval__num_envs=1, overrides=QUIET)
    policy = marl.load(run)
    acting, cfg, _ = load_policy(run.run_dir)
    env = gymnasium.make(cfg.env.id)
    obs, _ = env.reset(seed=0)
    for _ in range(50):
        action = policy.act(obs)
        assert env.action_space.contains(action)
        expected = oracle_actions(acting, {"agent": GroupObs(obs[None].astype(np.float32), np.ones(1, bool), None)})
        if algo == "sac":
            np.testing.assert_array_equal(action, expected["agent"][0])
        else:
            assert isinstance(action, int) and action == int(expected["agent"][0])
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    np.testing.assert_array_equal(policy.act({"agent_0": obs})["agent_0"], policy.act(obs))


def test_deploy_never_returns_a_masked_action_in_an_aec_game(tmp_path):
    from pettingzoo.classic import tictactoe_v3

    run = marl.train(CONFIGS / "tictactoe_ppo.yaml", run_dir=str(tmp_path / "ttt"), total_env_steps=64,
                     env__num_envs=2, algo__num_steps=16, algo__update_epochs=1, algo__num_minibatches=2,
                     eval__episodes=2, eval__num_envs=1, overrides=QUIET)
    policy = marl.load(run.run_dir)
    env = tictactoe_v3.env()
    moves = 0
    for game in range(6):
        env.reset(seed=game)
        for agent in env.agent_iter():
            obs, _, terminated, truncated, _ = env.last()
            action = None
            if not (terminated or truncated):
                action = policy.act(obs, agent=agent, deterministic=game % 2 == 0)
                assert obs["action_mask"][action] == 1
                moves += 1
            env.step(action)
    assert moves >= 6 * 5
    # one legal move left: it is the one chosen, from the observation's mask or from action_masks
    env.reset(seed=0)
    obs = env.observe("player_1")
    only = np.zeros(9, np.int8)
    only[7] = 1
    assert policy.act({"observation": obs["observation"], "action_mask": only}, agent="player_1") == 7
    assert policy.act({"player_1": {"observation": obs["observation"], "action_mask": only}}) == {"player_1": 7}
    with pytest.raises(DeployError, match="allows no action"):
        policy.act({"observation": obs["observation"], "action_mask": np.zeros(9, np.int8)}, agent="player_1")


# --------------------------------------------------------------------------- evaluate, compare, errors
def test_evaluate_a_run_and_a_loaded_policy_alike(spread_run):
    by_path = marl.evaluate(spread_run, episodes=2)
    by_policy = marl.evaluate(marl.load(spread_run), episodes=2)
    assert by_path == by_policy and by_path["episodes"] == 2


def test_compare_from_python(tmp_path):
    report, results = marl.compare(
        CONFIGS / "cartpole_ppo.yaml", {"small": {"model.hidden": [8]}, "wide": ["model.hidden=[32]"]}, seeds=[0],
        overrides={**TINY_CARTPOLE, "total_env_steps": 128}, out=tmp_path / "cmp", reps=50, log=lambda _: None)
    assert report.is_file()
    assert [v["n_ok"] for v in results["variants"].values()] == [1, 1]
    hidden = yaml.safe_load((tmp_path / "cmp/runs/small/seed0/config.yaml").read_text())["model"]["hidden"]
    assert hidden == [8]


def test_load_of_a_file_that_is_not_a_checkpoint_is_the_marl_eval_error(tmp_path, capsys):
    from marl.cli import main

    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        marl.load(bad)
    assert "\n" not in str(err.value)
    assert main(["eval", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"marl: error: {err.value}"
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        marl.load(tmp_path / "missing")


def test_unknown_override_key_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key algo\.lrr; did you mean algo\.lr\?") as err:
        marl.train(CONFIGS / "cartpole_ppo.yaml", algo__lrr=1e-3, run_dir=str(tmp_path / "x"))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="overridden twice"):
        marl.train(CONFIGS / "cartpole_ppo.yaml", algo__lr=1e-3, overrides={"algo.lr": 1e-3})
    with pytest.raises(ConfigError, match="config must be a YAML path, a dict or a marl Config"):
        marl.train(42)
    with pytest.raises(TypeError, match="env must be an env id or a callable"):
        marl.train(CONFIGS / "cartpole_ppo.yaml", env=3)
    assert not (tmp_path / "x").exists()


def test_importing_the_comparison_module_leaves_marl_compare_a_function():
    """The command's module is marl.comparison: importing it must not replace the API function marl.compare."""
    import types

    import marl
    import marl.comparison  # noqa: F401

    assert callable(marl.compare) and not isinstance(marl.compare, types.ModuleType)

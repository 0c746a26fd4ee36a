"""VDN and QMIX: the mixers (QMIX monotonicity), the team TD target against a hand computation (double Q,
masks, dead agents), one optimizer over agents and mixer, team rows in the replay, checkpoints, MPE runs
through the CLI, and a coordination game whose optimum is known."""

from __future__ import annotations

import json
from typing import ClassVar

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marl.algos.dqn import QPolicyNet
from marl.algos.value_decomposition import GroupRows, TeamBatch, ValueDecompositionLearner, standardized_rewards
from marl.api import load_policy
from marl.cli import main
from marl.config import ConfigError, ModelConfig, QMIXConfig, VDNConfig
from marl.env.make import register_env_callable
from marl.nets.mixers import QMixer, VDNMixer
from marl.off_policy.team import TeamTrainer, team_samples, to_team_batch
from marl.types import EnvSpec, GroupObs, GroupSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAYOFF = np.array([[10.0, 0.0, 20.0],
                   [0.0, 5.0, 0.0],
                   [0.0, 0.0, 2.0]])
"""Common reward of the coordination game, ``PAYOFF[a_0, a_1]``. ``agent_1`` may not play action 2, so
the 20 is out of reach and the optimum is ``(0, 0)``: 10 per agent, a team return of 20."""


class CoordinationGame(ParallelEnv):
    """One-step two-agent cooperative matrix game with a common reward and an action mask for ``agent_1``.

    Both agents see ``[1, 0]``; the global state is ``[1, 0.5]``. ``agent_1``'s mask forbids action 2.
    """

    metadata: ClassVar[dict] = {"name": "coordination_game_v0"}

    def __init__(self, render_mode: str | None = None) -> None:
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self.render_mode = render_mode
        self._obs_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.masks = {"agent_0": np.ones(3, np.int8), "agent_1": np.array([1, 1, 0], np.int8)}

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(3)

    def state(self) -> np.ndarray:
        return np.array([1.0, 0.5], np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: np.array([1.0, 0.0], np.float32) for a in self.possible_agents}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents = list(self.possible_agents)
        return self._obs(), {a: {"action_mask": self.masks[a]} for a in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        if actions["agent_1"] == 2:
            raise AssertionError("agent_1 played its masked action")
        r = float(PAYOFF[actions["agent_0"], actions["agent_1"]])
        self.agents = []
        ones = dict.fromkeys(self.possible_agents, True)
        return (self._obs(), dict.fromkeys(self.possible_agents, r), ones, dict.fromkeys(ones, False),
                {a: {"action_mask": self.masks[a]} for a in self.possible_agents})


GAME_2B = np.array([[0.0, 1.0], [1.0, 8.0]])


class TwoStepGame(ParallelEnv):
    """The two-step game of Rashid et al. 2018 (section 6.1): ``agent_0``'s first action picks the matrix game of
    the second step, 2A (every joint action pays 7) or 2B (:data:`GAME_2B`, 8 only when both play 1). Agents and
    state see the stage one-hot; the common reward is half the payoff each, so the team reward is the payoff."""

    metadata: ClassVar[dict] = {"name": "two_step_game_v0"}

    def __init__(self, render_mode: str | None = None) -> None:
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self.render_mode = render_mode
        self.stage = 0
        self._obs_space = spaces.Box(0.0, 1.0, (3,), np.float32)

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(2)

    def state(self) -> np.ndarray:
        return np.eye(3, dtype=np.float32)[self.stage]

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents, self.stage = list(self.possible_agents), 0
        return {a: self.state() for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        a0, a1 = actions["agent_0"], actions["agent_1"]
        done = self.stage > 0
        payoff = 0.0 if not done else (7.0 if self.stage == 1 else float(GAME_2B[a0, a1]))
        self.stage = 1 + int(a0) if not done else self.stage
        self.agents = [] if done else self.agents
        flags = dict.fromkeys(self.possible_agents, done)
        return ({a: self.state() for a in self.possible_agents}, dict.fromkeys(flags, payoff / 2), flags,
                dict.fromkeys(flags, False), {a: {} for a in self.possible_agents})


GAME = ("total_env_steps=1600", "env.num_envs=8", "algo.learning_starts=200", "algo.train_freq=8",
        "algo.gradient_steps=2", "algo.batch_size=64", "algo.lr=0.003", "algo.gamma=0.9",
        "algo.exploration_fraction=0.5", "algo.tau=1.0", "algo.target_update_interval=50", "model.hidden=[32]",
        "model.activation=relu", "norm.obs=false", "norm.reward=false", "eval.interval=0", "eval.episodes=4",
        "eval.num_envs=2", "log.interval=1000", "checkpoint.interval=800")


def game_config(make_config, algo: str, *overrides: str, run: str = "run"):
    return make_config(None, f"env.id={register_env_callable(CoordinationGame)}", f"algo.name={algo}", *GAME,
                       *overrides, run=run)


def spec_2x3(mask: bool = True) -> EnvSpec:
    agents = ("agent_0", "agent_1")
    obs = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    return EnvSpec(agents, (GroupSpec("agent", agents, obs, gymnasium.spaces.Discrete(3), has_action_mask=mask),),
                   state_shape=(3,))


# ------------------------------------------------------------------ mixers
@pytest.mark.parametrize("layers", [1, 2])
def test_qmix_mixer_is_monotonic_in_every_agents_q(layers):
    torch.manual_seed(layers)
    mixer = QMixer(n_agents=4, state_dim=6, embed=8, hypernet_layers=layers, hypernet_embed=16)
    q = (torch.randn(256, 4) * 5).requires_grad_(True)
    state = torch.randn(256, 6) * 3
    alive = torch.rand(256, 4) > 0.2
    (grad,) = torch.autograd.grad(mixer(q, state, alive).sum(), q)
    assert torch.all(grad[alive] >= 0) and (grad[alive] > 0).float().mean() > 0.99
    assert torch.all(grad[~alive] == 0)  # a dead agent's Q does not enter the mix
    with torch.no_grad():
        base = mixer(q, state)
        for a in range(4):
            bumped = q.clone()
            bumped[:, a] += torch.rand(256) * 3
            assert torch.all(mixer(bumped, state) >= base - 1e-5)
            assert torch.all(mixer(q.clone().index_fill_(1, torch.tensor([a]), -50.0), state) <= base + 1e-5)


def test_a_fresh_qmix_mixer_starts_close_to_a_sum():
    """Initial ``dQ_tot / dQ_a`` of order 1 on unit-scale states (a gain of about 6 made Q_tot drift on spread)."""
    torch.manual_seed(0)
    q = torch.randn(512, 3).requires_grad_(True)
    (grad,) = torch.autograd.grad(QMixer(3, 54)(q, torch.randn(512, 54)).sum(), q)
    assert 0.05 < float(grad.mean()) < 2.0


def test_vdn_mixer_sums_the_alive_agents():
    q = torch.tensor([[1.0, 2.0, 4.0], [3.0, -1.0, 5.0]])
    alive = torch.tensor([[True, True, False], [True, False, True]])
    torch.testing.assert_close(VDNMixer()(q, None, alive), torch.tensor([3.0, 8.0]))


# ------------------------------------------------------------------ learner maths
def team_batch(mask_next: bool = True) -> TeamBatch:
    """Three rows of two agents: a plain row, a row with a dead agent (and one terminated at the window end),
    and a row where the whole team terminated."""
    g = torch.Generator().manual_seed(0)
    obs, next_obs = torch.randn(3, 2, 2, generator=g), torch.randn(3, 2, 2, generator=g)
    next_mask = torch.ones(3, 2, 3, dtype=torch.bool)
    if mask_next:
        next_mask[0, 0, 1] = next_mask[1, 0, 0] = next_mask[0, 1, 2] = False
    rows = GroupRows(
        obs=obs, action=torch.tensor([[0, 2], [1, 1], [2, 0]]),
        reward_n=torch.tensor([[1.0, 2.0], [0.5, 7.0], [3.0, -1.0]]), next_obs_n=next_obs,
        terminated_n=torch.tensor([[False, False], [True, False], [True, True]]),
        alive=torch.tensor([[True, True], [True, False], [True, True]]),
        next_alive_n=torch.tensor([[True, True], [True, False], [True, True]]),
        action_mask=torch.ones(3, 2, 3, dtype=torch.bool), next_action_mask_n=next_mask)
    return TeamBatch({"agent": rows}, discount_n=torch.tensor([0.9, 0.81, 0.9]), weights=torch.ones(3))


def perturbed_learner(cfg) -> ValueDecompositionLearner:
    torch.manual_seed(1)
    q = QPolicyNet(spec_2x3(), ModelConfig(hidden=[8]), dueling=False)
    mixer = VDNMixer() if not isinstance(cfg, QMIXConfig) else QMixer(2, 4, embed=4)
    learner = ValueDecompositionLearner(q, mixer, cfg)
    with torch.no_grad():  # target agents differ from the online ones, so double Q matters
        for p in learner.target.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return learner


@pytest.mark.parametrize("double_q", [True, False])
def test_vdn_target_matches_a_hand_computation(double_q):
    learner = perturbed_learner(VDNConfig(double_q=double_q))
    b = team_batch()
    rows = b.groups["agent"]
    with torch.no_grad():
        q_on = learner.q["agent"](rows.obs).numpy()
        next_on = learner.q["agent"](rows.next_obs_n).numpy()
        next_tg = learner.target["agent"](rows.next_obs_n).numpy()
    chooser = next_on if double_q else next_tg
    mask = rows.next_action_mask_n.clone()
    mask[0, [0, 1], torch.as_tensor(chooser[0].argmax(-1))] = False  # row 0: the best next actions are not allowed
    rows = rows._replace(next_action_mask_n=mask)
    b = b._replace(groups={"agent": rows})
    _, td, _ = learner.losses(b)
    expected_td = []
    for i in range(3):
        alive, term = rows.alive[i].numpy(), rows.terminated_n[i].numpy()
        q_tot = sum(q_on[i, a, rows.action[i, a]] for a in range(2) if alive[a])
        r_tot = sum(float(rows.reward_n[i, a]) for a in range(2) if alive[a])
        next_sum = 0.0
        for a in range(2):
            if not rows.next_alive_n[i, a] or term[a]:
                continue  # a dead or terminated agent adds nothing to the bootstrap mix
            allowed = np.flatnonzero(mask[i, a].numpy())
            best = allowed[np.argmax(chooser[i, a, allowed])]
            next_sum += next_tg[i, a, best]
        team_done = all(term[a] or not alive[a] for a in range(2))
        y = r_tot + (0.0 if team_done else float(b.discount_n[i]) * next_sum)
        expected_td.append(q_tot - y)
    np.testing.assert_allclose(td.numpy(), np.array(expected_td), rtol=1e-5, atol=1e-5)
    # row 1: agent_1 is dead (its reward 7 and its Q are left out); row 2: the team terminated (no bootstrap)
    assert abs(expected_td[2] - (q_on[2, 0, 2] + q_on[2, 1, 0] - 2.0)) < 1e-5
    _, td_unmasked, _ = learner.losses(team_batch(mask_next=False))
    assert abs(float(td_unmasked[0]) - float(td[0])) > 1e-4  # the masks changed row 0's target


def test_standardized_rewards_enter_the_target_by_hand():
    """EPyMARL's standardise_rewards: the batch's team rewards minus their mean over their (unbiased) std; rows where
    no agent acted are left out of both and give 0. The targets move by exactly the change of the rewards."""
    r, valid = torch.tensor([0.0, 0.0, 1.0, 5.0]), torch.tensor([True, True, True, False])
    v = np.array([0.0, 0.0, 1.0])
    expected = np.append((v - v.mean()) / (v.std(ddof=1) + 1e-5), 0.0)
    np.testing.assert_allclose(standardized_rewards(r, valid).numpy(), expected, rtol=1e-6)

    b = team_batch()
    _, td_raw, _ = perturbed_learner(VDNConfig()).losses(b)
    _, td_std, _ = perturbed_learner(VDNConfig(standardize_rewards=True)).losses(b)
    r_tot = np.array([1.0 + 2.0, 0.5, 3.0 - 1.0])  # row 1: agent_1 is dead, its reward is left out
    r_std = (r_tot - r_tot.mean()) / (r_tot.std(ddof=1) + 1e-5)
    np.testing.assert_allclose((td_std - td_raw).numpy(), r_tot - r_std, rtol=1e-5, atol=1e-5)


def test_standardized_returns_target_by_hand():
    """``algo.standardize_returns``: the target mixer's output is mapped back to returns with the statistics held
    before the step, the targets join the statistics (oracle: mean and variance of every target ever folded in,
    by numpy over the concatenation), and ``Q_tot`` is trained towards the standardized targets."""
    b = team_batch()
    rows = b.groups["agent"]
    learner = perturbed_learner(VDNConfig(standardize_returns=True))
    earlier = np.array([-30.0, -12.0, -7.5, -22.0, 4.0])  # targets of earlier steps
    learner.return_stats.update(earlier)
    mean0, std0 = earlier.mean(), earlier.std()
    with torch.no_grad():
        q_on = learner.q["agent"](rows.obs).numpy()
        next_on = learner.q["agent"](rows.next_obs_n, rows.next_action_mask_n).numpy()
        next_tg = learner.target["agent"](rows.next_obs_n).numpy()
    q_tot, y_raw = [], []
    for i in range(3):
        alive, term = rows.alive[i].numpy(), rows.terminated_n[i].numpy()
        q_tot.append(sum(q_on[i, a, rows.action[i, a]] for a in range(2) if alive[a]))
        next_sum = 0.0
        for a in range(2):
            if rows.next_alive_n[i, a] and not term[a]:
                allowed = np.flatnonzero(rows.next_action_mask_n[i, a].numpy())
                next_sum += next_tg[i, a, allowed[np.argmax(next_on[i, a, allowed])]]
        r_tot = sum(float(rows.reward_n[i, a]) for a in range(2) if alive[a])
        team_done = all(term[a] or not alive[a] for a in range(2))
        next_returns = next_sum * (std0 + 1e-5) + mean0  # the target mixer's output in return units
        y_raw.append(r_tot + (0.0 if team_done else float(b.discount_n[i]) * next_returns))
    seen = np.concatenate([earlier, y_raw])
    y = (np.array(y_raw) - seen.mean()) / (seen.std() + 1e-5)
    _, td, metrics = learner.losses(b)
    np.testing.assert_allclose(td.numpy(), np.array(q_tot) - y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose([float(learner.return_stats.mean), float(learner.return_stats.var)],
                               [seen.mean(), seen.var()], rtol=1e-4)
    returns = np.array(q_tot) * (seen.std() + 1e-5) + seen.mean()  # q_mean is reported in return units
    assert float(metrics["q_mean"]) == pytest.approx(returns.mean(), rel=1e-4)


def test_one_optimizer_trains_agents_and_mixer_and_targets_only_follow():
    cfg = QMIXConfig(target_update_interval=3, tau=1.0, lr=1e-2)
    learner = perturbed_learner(cfg)
    ids = [id(p) for group in learner.optimizer.param_groups for p in group["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in learner.trainable()}
    assert {id(p) for p in [*learner.mixer.parameters(), *learner.q.parameters()]} <= set(ids)
    b = team_batch()._replace(state=torch.randn(3, 4), next_state_n=torch.randn(3, 4))
    before = [p.detach().clone() for p in learner.trainable()]
    target_before = [p.detach().clone() for p in [*learner.target.parameters(), *learner.target_mixer.parameters()]]
    learner.update(b)
    changed = [not torch.equal(p0, p) for p0, p in zip(before, learner.trainable())]
    n_q = len(list(learner.q.parameters()))
    assert any(changed[:n_q]) and any(changed[n_q:])  # the agents and the mixer both moved
    assert all(p.grad is None for p in [*learner.target.parameters(), *learner.target_mixer.parameters()])
    targets = [*learner.target.parameters(), *learner.target_mixer.parameters()]
    assert all(torch.equal(t0, t) for t0, t in zip(target_before, targets))
    learner.update(b)
    learner.update(b)  # third step: hard copy
    for t, p in zip(targets, learner.trainable()):
        torch.testing.assert_close(t, p)


# ------------------------------------------------------------------ the trainer
@pytest.mark.parametrize("algo", ["vdn", "qmix"])
def test_coordination_game_reaches_the_optimum_and_never_plays_masked_actions(make_config, algo):
    trainer = TeamTrainer(game_config(make_config, algo))
    summary = trainer.train()
    buf = trainer.replay["agent"]
    actions = buf.storage.field("action")[: buf.storage.size.max()]
    assert len(buf) == 1600 and not np.any(actions[..., 1] == 2)  # agent_1's masked action never collected
    assert np.array_equal(np.unique(actions[..., 0]), [0, 1, 2])  # agent_0 explored all its actions
    if algo == "qmix":  # the env's state() is stored with every row (and as the final state: one-step episodes)
        np.testing.assert_array_equal(buf.storage.field("state")[:10], np.broadcast_to([1.0, 0.5], (10, 8, 2)))
        np.testing.assert_array_equal(buf.storage.field("next_state")[:10], np.broadcast_to([1.0, 0.5], (10, 8, 2)))
    assert summary["final_eval"]["ep_return"] == pytest.approx(20.0)  # (0, 0): 10 for each of the two agents
    obs = {"agent": GroupObs(np.tile([1.0, 0.0], (1, 2, 1)).astype(np.float32), np.ones((1, 2), bool),
                             np.array([[[1, 1, 1], [1, 1, 0]]], bool))}
    assert trainer.actor.act(obs, deterministic=True).action["agent"].tolist() == [[0, 0]]


@pytest.mark.parametrize("algo, known", [("vdn", 7.0), ("qmix", 8.0)])
def test_two_step_game_gives_the_papers_answers(make_config, algo, known):
    """Rashid et al. 2018, section 6.1, with uniform exploration: VDN's sum cannot represent the value of choosing
    game 2B, so it settles for 7; QMIX's state-conditioned monotonic mixing finds the optimum 8."""
    cfg = make_config(None, f"env.id={register_env_callable(TwoStepGame)}", f"algo.name={algo}", *GAME,
                      "total_env_steps=2400", "algo.gamma=0.99", "algo.epsilon_start=1.0", "algo.epsilon_final=1.0",
                      "algo.gradient_steps=4")
    summary = TeamTrainer(cfg).train()
    assert summary["final_eval"]["ep_return"] == pytest.approx(known)


@pytest.mark.parametrize("returns", [False, True])
def test_checkpoint_round_trip_and_exact_resume(make_config, returns):
    """``load_policy`` acts greedily like the trainer; 800 steps in one go == resumed from the checkpoint at 400
    (agents, mixer, targets, optimizer, team replays, PER priorities of the team TD errors, and with
    ``algo.standardize_returns`` the TD targets' statistics)."""
    common = ("total_env_steps=800", "algo.save_replay=true", "algo.per=true", "norm.obs=true",
              "checkpoint.interval=400", "checkpoint.keep_last=2", f"algo.standardize_returns={str(returns).lower()}")
    full = TeamTrainer(game_config(make_config, "qmix", *common, run="full"))
    full.train()
    policy, loaded_cfg, state = load_policy(full.ckpt_dir / "latest.pt")
    assert loaded_cfg.algo.name == "qmix" and state["learner"]["grad_steps"] == full.learner.grad_steps > 0
    rng = np.random.default_rng(0)
    mask = np.ones((64, 2, 3), bool)
    mask[:, 1, 2] = False
    obs = {"agent": GroupObs(rng.normal(size=(64, 2, 2)).astype(np.float32), np.ones((64, 2), bool), mask)}
    a = full.actor.act(obs, deterministic=True).action["agent"]
    b = policy.act(obs, deterministic=True).action["agent"]
    assert torch.equal(a, b) and not torch.any(b[:, 1] == 2)
    resumed = TeamTrainer(game_config(make_config, "qmix", *common, f"resume={full.ckpt_dir / 'step_400.pt'}",
                                      run="resumed"))
    assert resumed.env_steps == 400 and len(resumed.replay["agent"]) == 400
    resumed.train()
    parts = ("q", "mixer", "target", "target_mixer")
    for part in parts:
        for p, r in zip(getattr(full.learner, part).parameters(), getattr(resumed.learner, part).parameters()):
            assert torch.equal(p, r), part
    np.testing.assert_array_equal(full.replay["agent"].sampler.tree.leaves, resumed.replay["agent"].sampler.tree.leaves)
    assert full.replay["agent"].sampler.tree.leaves.std() > 0  # the priorities did change
    assert full.learner.grad_steps == resumed.learner.grad_steps
    if returns:
        assert resumed.learner.return_stats.count > 400 and full.learner.return_stats.state_dict().keys() == {
            "mean", "var", "count"}
        for key, value in full.learner.return_stats.state_dict().items():
            assert torch.equal(value, resumed.learner.return_stats.state_dict()[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("returns", [True, pytest.param(False, marks=pytest.mark.xfail(
    reason="raw TD targets: the mixer's gain grows until Q_tot diverges (bench/README.md)"))])
def test_qmix_team_value_stays_bounded_on_spread(make_config, returns):
    """configs/spread_qmix.yaml for 150k env steps, seed 0 (about 90 s). With raw TD targets (``returns=False``,
    expected to fail) the mixer's gain dQ_tot/dQ_a grew from 0.5 to about 120 and Q_tot (every spread reward is
    negative) reached +700 by 150k; standardized targets keep the gain below 1 and Q_tot within tens of the
    returns. Later in training they do not always hold Q_tot (seed 1 diverged after 200k: bench/README.md)."""
    cfg = make_config("configs/spread_qmix.yaml", "env.backend=batched", "total_env_steps=150000",
                      f"algo.standardize_returns={str(returns).lower()}",
                      f"algo.return_stats={'returns' if returns else 'targets'}", "eval.interval=0", "eval.episodes=10",
                      "eval.num_envs=10", "eval.stochastic_check=false", "log.interval=100000")
    trainer = TeamTrainer(cfg)
    trainer.train()
    first, rows = team_samples(trainer.replay, 1024, np.random.default_rng(0), None)
    b = to_team_batch(first, rows, trainer.actor.obs_norm, trainer.device)
    q, _ = trainer.learner.agent_values(b)
    q = q.detach().requires_grad_(True)
    (gain,) = torch.autograd.grad(trainer.learner.mixer(q, b.state).sum(), q)
    _, _, metrics = trainer.learner.losses(b)
    assert float(gain.mean()) < 5.0
    assert abs(float(metrics["q_mean"])) < 100.0  # team return units; raw targets: +700


@pytest.mark.parametrize("algo, extra", [("vdn", ()), ("qmix", ("algo.per=true", "algo.n_step=3"))])
def test_spread_trains_and_evaluates_through_the_cli(tmp_path, capsys, quiet, algo, extra):
    run = tmp_path / algo
    code = main(["train", f"configs/spread_{algo}.yaml", f"run_dir={run}", *quiet, "total_env_steps=1200",
                 "env.num_envs=4", "algo.learning_starts=400", "algo.batch_size=32", "eval.interval=0",
                 "eval.episodes=2", "eval.num_envs=2", "log.interval=10", "model.hidden=[32]", *extra])
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 1200 and summary["grad_steps"] > 0
    assert np.isfinite(summary["final_eval"]["ep_return"])
    capsys.readouterr()
    assert main(["eval", str(run), "--json", "--episodes", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["ep_length"] == 25


def test_two_groups_form_one_team(make_config):
    """speaker_listener: a speaker (3 features, 3 actions) and a listener (11 features, 5 actions) are mixed as one
    team of two; both replays hold the same env steps and both groups' networks learn from the team loss."""
    speaker_listener = ("env.id=mpe2.simple_speaker_listener_v4", "env.kwargs={continuous_actions: false}",
                        "algo.name=qmix", "total_env_steps=480", "env.num_envs=4", "algo.learning_starts=240",
                        "algo.batch_size=16", "model.hidden=[16]", "norm.reward=false", "eval.interval=0",
                        "eval.episodes=1", "eval.num_envs=1", "log.interval=1000")
    trainer = TeamTrainer(make_config(None, *speaker_listener))
    assert [g.name for g in trainer.spec.groups] == ["speaker", "listener"]
    assert trainer.learner.mixer.n_agents == 2 and trainer.spec.state_shape == (14,)
    before = {g: [p.detach().clone() for p in trainer.actor.net[g].parameters()] for g in ("speaker", "listener")}
    trainer.train()
    assert len(trainer.replay["speaker"]) == len(trainer.replay["listener"]) == 480
    for g, params in before.items():
        assert any(not torch.equal(p0, p) for p0, p in zip(params, trainer.actor.net[g].parameters())), g
    nstep = TeamTrainer(make_config(None, *speaker_listener, "algo.n_step=3", "algo.per=true", run="nstep"))
    nstep.train()  # n-step windows over both groups (tests/algos/test_team_replay.py), prioritized
    assert nstep.learner.grad_steps > 0 and all(b.n_step == 3 for b in nstep.replay.values())


def test_unsupported_combinations_are_one_line_errors(make_config):
    with pytest.raises(ConfigError, match="algo.name=vdn needs Discrete actions"):
        TeamTrainer(make_config(None, "env.id=Pendulum-v1", "algo.name=vdn", "norm.reward=false"))
    with pytest.raises(ConfigError, match="algo.hypernet_layers"):
        game_config(make_config, "qmix", "algo.hypernet_layers=3")
    with pytest.raises(ConfigError, match="algo.her"):
        game_config(make_config, "vdn", "algo.her=true")

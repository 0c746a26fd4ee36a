"""Recurrent PPO: collection vs the BPTT recomputation, hidden-state resets, dead agents, save/load, training runs.

Oracles: the log-probs and values the policy computed step by step while collecting (a chunk run
from its stored initial state must give them again); the episode boundaries of envs whose
episode lengths are known; a deployed copy of a saved policy acting on the same observations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import marl
from marl.api import load_policy
from marl.config import ConfigError, load_config
from marl.deploy import DeployError
from marl.env.make import vector_env
from marl.evaluation import run_episodes
from marl.loop import EnvLoop
from marl.on_policy.collector import RolloutCollector
from marl.on_policy.policy import ActorCriticPolicy

CUE = ["env.id=envs.cue_recall", "env.kwargs={n_agents: 2, n_cues: 3, delay: 3}"]
GATHER = ["env.id=envs.coop_gather", "env.kwargs={n_agents: 3, size: 6, n_hazards: 8, n_resources: 2}"]


def recompute_error(rollouts, policy) -> float:
    """Largest |log-prob or value recomputed from the stored chunks - the one collected| over alive entries."""
    worst = 0.0
    for r in rollouts:
        for g, seq in r["_seq"].items():
            with torch.no_grad():
                dist, value = policy.net[g].sequence_dist_and_value(seq.obs, seq.critic_in, seq.action_mask,
                                                                   seq.hidden, seq.alive, seq.reset)
            a = seq.alive
            worst = max(worst, float((dist.log_prob(seq.action) - seq.log_prob)[a].abs().max()),
                        float((value - seq.value)[a].abs().max()))
    return worst


def collect(overrides, rollouts=1, num_envs=4):
    """Rollouts of a fresh recurrent policy (sync backend, ``num_envs`` copies): ``(rollouts, policy, collector)``."""
    cfg = load_config(None, ["env.backend=sync", f"env.num_envs={num_envs}", "seed=2", "model.recurrent=gru",
                             "model.rnn_hidden=16", "model.hidden=[32]", "algo.num_minibatches=1", *overrides])
    env = vector_env(cfg, cfg.env.num_envs)
    try:
        loop = EnvLoop(env, overlap=cfg.env.overlap)
        loop.reset(cfg.seed)
        torch.manual_seed(0)
        policy = ActorCriticPolicy(env.spec, cfg)
        collector = RolloutCollector(loop, policy, num_steps=cfg.algo.num_steps, reward_norm=cfg.norm.reward,
                                     reward_clip=cfg.norm.reward_clip, gamma=cfg.algo.gamma,
                                     bptt_len=cfg.algo.bptt_len)
        out = []
        for _ in range(rollouts):
            r = collector.collect()
            out.append({g: {k: (None if getattr(b, k) is None else getattr(b, k).clone())
                            for k in ("obs", "critic_in", "log_prob", "value", "alive", "reset", "hidden",
                                      "terminated", "truncated", "action", "action_mask")}
                        for g, b in r.groups.items()})
            # copies: the storage is rewritten by the next rollout
            out[-1]["_seq"] = {g: type(s)(*(None if x is None else x.clone() for x in s))
                               for g, s in ((g, b.sequences()) for g, b in r.groups.items())}
        return out, policy, collector
    finally:
        env.close()


@pytest.mark.parametrize("model", [
    ["model.recurrent=gru", "model.sharing=shared"],
    ["model.recurrent=lstm", "model.sharing=independent"],
    ["model.recurrent=gru", "model.sharing=independent", "model.critic=central"],
    ["model.recurrent=lstm", "model.sharing=shared", "model.critic=central"],
], ids=["gru-shared", "lstm-independent", "gru-independent-central", "lstm-shared-central"])
def test_chunk_forward_recomputes_the_collected_log_probs_and_values(model) -> None:
    """BPTT over stored chunks (initial state, alive, resets) equals the step-by-step collection, with agent
    deaths and episode ends inside chunks (coop_gather with many hazards), over two rollouts."""
    rollouts, policy, _ = collect([*GATHER, "algo.num_steps=24", "algo.bptt_len=8", *model], rollouts=2)
    assert recompute_error(rollouts, policy) < 2e-5
    # some agent died while its team went on: its reset is inside an episode
    assert any((r["agent"]["terminated"] & ~r["agent"]["reset"].all(-1, keepdim=True)).any() for r in rollouts)


def test_hidden_state_is_zeroed_at_exactly_the_step_after_an_episode_end() -> None:
    """cue_recall episodes last delay + 1 = 4 steps; with bptt_len=1 the state fed at every step is stored."""
    rollouts, _, collector = collect([*CUE, "algo.num_steps=12", "algo.bptt_len=1"], rollouts=2)
    for r in rollouts:
        raw = r["agent"]
        t = torch.arange(12)
        first_step = (t % 4 == 0)[:, None, None].expand(12, 4, 2)
        is_zero = (raw["hidden"] == 0).all(-1)
        assert torch.equal(is_zero, first_step)  # zero at each episode's first step, and only there
        assert torch.equal(raw["reset"], (t % 4 == 3)[:, None, None].expand(12, 4, 2))
        assert torch.equal(raw["reset"], raw["terminated"] | raw["truncated"])
    # the carried state after the rollout is the one the next rollout starts from (step 12 is an episode start)
    assert (collector.hidden["agent"] == 0).all()


def test_dead_agent_state_does_not_leak_into_its_next_life() -> None:
    rollouts, _, _ = collect([*GATHER, "algo.num_steps=30", "algo.bptt_len=1", "model.sharing=independent"],
                             num_envs=6)
    raw = rollouts[0]["agent"]
    h, alive, reset = raw["hidden"], raw["alive"], raw["reset"]
    zero = (h == 0).all(-1)
    # after a reset (death or episode end) the state is zero; an agent that does not act keeps its state
    assert zero[1:][reset[:-1]].all()
    carried = ~alive[:-1] & ~reset[:-1]
    assert torch.equal(h[1:][carried], h[:-1][carried])
    # every step of a dead agent and every first step of a new life sees a zero state
    assert zero[1:][~alive[:-1] & alive[1:]].all()
    died = (raw["terminated"] & ~raw["terminated"].all(-1, keepdim=True)).any()
    assert died  # the case is exercised: an agent died while others lived on


def test_saved_recurrent_policy_acts_the_same_after_loading(tmp_path) -> None:
    run = marl.train(None, overrides=[*CUE, "model.recurrent=lstm", "model.rnn_hidden=8", "model.hidden=[16]",
                                      "env.backend=sync", "env.num_envs=2", "algo.num_steps=8", "algo.bptt_len=4",
                                      "algo.num_minibatches=2", "total_env_steps=32", "eval.episodes=2",
                                      "eval.num_envs=1", "log.tensorboard=false", "log.progress=false",
                                      f"run_dir={tmp_path / 'run'}"])
    deployed = marl.load(run.run_dir)
    policy, _, _ = load_policy(run.run_dir)
    with pytest.raises(DeployError, match="recurrent"):
        deployed.act({"agent_0": np.zeros(4, np.float32)})
    env = deployed.make_env()
    obs, _ = env.reset(seed=7)
    hidden = deployed.initial_hidden()
    ref_hidden = policy.initial_hidden(1)
    steps = 0
    while env.agents:
        actions, hidden = deployed.act(obs, hidden=hidden)
        group_obs = {"agent": deployed._group_obs(deployed.spec.groups[0], obs, {})}
        out = policy.act(group_obs, None, deterministic=True, with_value=False, hidden=ref_hidden)
        ref_hidden = out.hidden
        assert actions == {a: int(out.env_action["agent"][0, k]) for k, a in enumerate(deployed.agents)}
        torch.testing.assert_close(hidden["agent"], ref_hidden["agent"], rtol=0, atol=0)
        obs, *_ = env.step(actions)
        steps += 1
    assert steps == 4 and hidden["agent"].abs().sum() > 0


@pytest.mark.parametrize("model", [["model.recurrent=gru", "model.critic=central"],
                                   ["model.recurrent=lstm", "model.sharing=independent"]], ids=["gru-central",
                                                                                               "lstm-independent"])
def test_short_recurrent_ppo_run_on_simple_spread(tmp_path, model) -> None:
    run = marl.train("configs/simple_spread_ppo.yaml",
                     overrides=["env.backend=sync", "env.num_envs=2", "algo.num_steps=50", "algo.bptt_len=25",
                                "algo.num_minibatches=2", "algo.update_epochs=2", "total_env_steps=200",
                                "eval.episodes=2", "eval.num_envs=2", "log.tensorboard=false", "log.progress=false",
                                *model, f"run_dir={tmp_path / 'run'}"])
    summary = run.summary
    assert summary["env_steps"] == 200
    assert np.isfinite(summary["final_eval"]["ep_return"])


@pytest.mark.parametrize("overrides, key", [
    (["algo.num_steps=100", "algo.bptt_len=30"], "algo.bptt_len"),
    (["algo.num_steps=100", "algo.bptt_len=50", "env.num_envs=3", "algo.num_minibatches=4"], "algo.num_minibatches"),
    (["algo.name=sac", "norm.reward=false"], "model.recurrent"),
    (["model.hidden=[]"], "model.hidden"),
])
def test_bad_recurrent_configs_are_one_line_errors(overrides, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        load_config(None, ["model.recurrent=gru", *overrides])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [
    ["env.id=pettingzoo.classic.tictactoe_v3", "env.kwargs={}", "norm.obs=false", "algo.num_steps=20",
     "algo.bptt_len=10"],
    [*CUE, "env.backend=subprocess", "env.num_workers=2", "env.overlap=true", "algo.num_steps=12", "algo.bptt_len=6"],
], ids=["turn-based", "subprocess-overlap"])
def test_waiting_agents_and_overlapped_chunks_recompute_the_collection(overrides) -> None:
    """Turn-based games (the waiting player keeps its state; games end inside chunks) and env copies acted on
    chunk by chunk in worker processes store chunks that the BPTT forward reproduces."""
    rollouts, policy, collector = collect(overrides, rollouts=2)
    raw = rollouts[0][next(iter(policy.net.keys()))]
    overlapped = "env.overlap=true" in overrides
    assert len(collector.loop.units) == (2 if overlapped else 1)
    assert (~raw["alive"]).any() or overlapped
    assert raw["reset"].any()
    assert recompute_error(rollouts, policy) < 2e-5


class RecordingPolicy:
    """A real recurrent policy that also keeps the hidden state it is given and returns at every call."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        self.policy = policy
        self.given: list[torch.Tensor] = []
        self.returned: list[torch.Tensor] = []

    def initial_hidden(self, num_envs: int):
        return self.policy.initial_hidden(num_envs)

    def act(self, obs, state=None, deterministic=False, update_stats=False, with_value=True, hidden=None):
        out = self.policy.act(obs, state, deterministic, update_stats, with_value, hidden=hidden)
        self.given.append(hidden["agent"].clone())
        self.returned.append(out.hidden["agent"].clone())
        return out


def test_evaluation_carries_the_hidden_state_and_restarts_it_at_episode_starts() -> None:
    cfg = load_config(None, [*CUE, "model.recurrent=gru", "model.rnn_hidden=8", "model.hidden=[16]",
                             "env.num_envs=2", "algo.num_minibatches=1"])
    env = vector_env(cfg, 3)
    try:
        policy = RecordingPolicy(ActorCriticPolicy(env.spec, cfg))
        run = run_episodes(policy, env, episodes=6, seeds=[1, 2, 3, 4])
    finally:
        env.close()
    assert len(run.episodes) == 6 and len(policy.given) == 8  # 2 episodes of 4 steps per copy
    for t, (given, returned) in enumerate(zip(policy.given, policy.returned)):
        if t % 4 == 0:
            assert (given == 0).all()  # an episode start: zero state
        else:
            torch.testing.assert_close(given, policy.returned[t - 1], rtol=0, atol=0)  # carried from the last step
        assert (returned != 0).any()

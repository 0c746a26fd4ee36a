"""Recurrent DQN end to end: acting states (zeroed at exactly the step a copy resets or an agent dies), the
stored sequences reproducing them, config errors, short runs per sharing mode, resume, and (slow) learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import marl
import marl.registry
from marl import checkpoint as ckpt
from marl.config import ConfigError, load_config
from marl.data.sequences import SequenceReplay
from marl.off_policy.sequences import RecurrentDQNTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

CUE = ["env.id=envs.cue_recall", "env.kwargs={n_agents: 2, n_cues: 3, delay: 3}"]
GATHER = ["env.id=envs.coop_gather", "env.kwargs={n_agents: 3, size: 6, n_hazards: 8, n_resources: 2}"]
CONFIG = "configs/memory_gru_dqn.yaml"
SMALL = ["algo.name=dqn", "model.recurrent=gru", "model.rnn_hidden=8", "model.hidden=[16]", "norm.reward=false",
         "env.backend=sync", "eval.episodes=2", "eval.num_envs=1", "log.tensorboard=false", "log.progress=false"]


def load_trainer(cfg):
    """The trainer the registry picks for ``cfg`` (recurrent dqn, or recurrent vdn / qmix)."""
    return marl.registry.algorithm(cfg.algo.name).trainer_class(cfg)(cfg)


def merged(*overrides: str) -> list[str]:
    """``key=value`` overrides with later keys winning (a key may be given once)."""
    return [f"{k}={v}" for k, v in dict(o.split("=", 1) for o in overrides).items()]


def pending_state(buf: SequenceReplay, net, e: int) -> torch.Tensor:
    """Unroll copy ``e``'s pending sequence from its stored first state: the state after its last step
    (with the carry rules, zeroed where an agent ended)."""
    n = int(buf.count[e])
    p = buf.pending
    with torch.no_grad():
        _, h = net.net(torch.as_tensor(p["obs"][e, :n]).unsqueeze(1), torch.as_tensor(p["hidden"][e, 0]).unsqueeze(0),
                       torch.as_tensor(p["alive"][e, :n]).unsqueeze(1), torch.as_tensor(p["ended"][e, :n]).unsqueeze(1))
    return h[0]


@pytest.mark.parametrize("sharing", ["shared", "independent"])
def test_acting_states_reset_at_exactly_the_step_and_the_sequences_reproduce_them(tmp_path, sharing) -> None:
    """coop_gather: agents die on hazards while others go on, copies end their episodes at different steps."""
    cfg = load_config(None, [*SMALL, *GATHER, "env.num_envs=4", "algo.seq_len=5", "algo.burn_in=2",
                             "algo.learning_starts=100000", "norm.obs=false", f"model.sharing={sharing}",
                             f"run_dir={tmp_path}"])  # raw observations: the unroll reads what the actor read
    trainer = RecurrentDQNTrainer(cfg)
    try:
        buf, net = trainer.replay["agent"], trainer.actor.net["agent"]
        deaths = resets = continued = 0
        for _ in range(60):
            before = trainer.loop.obs["agent"].alive.copy()
            episodes = trainer.collect(epsilon=1.0)
            h = trainer.hidden["agent"]
            ended = {ep.env_index for ep in episodes}
            for e in range(4):
                if e in ended:  # the copy reset at this step: every agent's state is zero now
                    assert (h[e] == 0).all()
                    assert buf.count[e] == 0
                    resets += 1
                    continue
                died = before[e] & ~trainer.loop.obs["agent"].alive[e]
                assert (h[e][torch.as_tensor(died)] == 0).all()  # a dead agent's state is zeroed
                deaths += int(died.sum())
                if buf.count[e] and not buf.fresh[e]:
                    continued += 1
                # the pending sequence, unrolled from its stored first state, gives the acting state
                if buf.count[e]:
                    torch.testing.assert_close(pending_state(buf, net, e), h[e], rtol=1e-5, atol=1e-6)
            assert (h != 0).any()
        assert deaths and resets and continued  # every case was exercised
        assert len(buf) > 0 and (buf.fields["hidden"][buf.fields["burn_in"] == 0] == 0).all()
    finally:
        trainer.close()


@pytest.mark.parametrize("overrides, key", [
    (["algo.seq_len=4", "algo.burn_in=4"], "algo.burn_in"),
    (["algo.seq_len=4", "algo.burn_in=2", "algo.n_step=3"], "algo.n_step"),
    (["algo.per_eta=1.5"], "algo.per_eta"),
    (["algo.buffer_size=100", "algo.seq_len=20", "algo.burn_in=10", "algo.batch_size=32"], "algo.buffer_size"),
    (["algo.num_actors=2"], "algo.num_actors"),
    (["algo.name=sac"], "model.recurrent"),
    (["algo.name=qmix", "algo.seq_len=4", "algo.burn_in=2", "algo.n_step=3"], "algo.n_step"),
    (["model.hidden=[]"], "model.hidden"),
])
def test_bad_recurrent_dqn_configs_are_one_line_errors(overrides, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        load_config(None, [*SMALL, *overrides])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("model", [
    ["model.sharing=shared", "algo.per=true"],
    ["model.sharing=independent", "model.recurrent=lstm", "algo.n_step=2"],
    ["model.sharing={agent_0: a, agent_1: b, agent_2: a}", "algo.dueling=true"],
    ["algo.name=qmix", "model.sharing=independent", "algo.per=true"],
    ["algo.name=vdn", "model.recurrent=lstm"],
    ["algo.name=qmix", "algo.n_step=3", "algo.standardize_rewards=true"],
], ids=["gru-shared-per", "lstm-independent-nstep", "grouped-dueling", "qmix-independent-per", "vdn-lstm",
        "qmix-nstep-standardized"])
def test_short_runs_train_evaluate_and_reload(tmp_path, model) -> None:
    run = marl.train(CONFIG, overrides=merged(*SMALL, *CUE, "env.kwargs={n_agents: 3, n_cues: 3, delay: 3}",
                                              "env.num_envs=2",
                                      "algo.seq_len=6", "algo.burn_in=2", "algo.learning_starts=40",
                                      "algo.batch_size=4", "algo.buffer_size=400", "total_env_steps=120",
                                      f"run_dir={tmp_path}", *model))
    assert run.summary["env_steps"] == 120 and np.isfinite(run.final_return)
    policy = marl.load(run)
    hidden = policy.initial_hidden()
    assert hidden is not None and (hidden["agent"] == 0).all()
    obs = {f"agent_{i}": np.eye(4, dtype=np.float32)[0] for i in range(3)}
    actions, hidden = policy.act(obs, hidden=hidden)
    assert set(actions) == set(obs) and (hidden["agent"] != 0).any()


def test_resume_with_the_replay_equals_an_uninterrupted_run(make_config) -> None:
    """88 steps in one go == resumed from the checkpoint at 44, mid-episode and mid-sequence (stored and pending
    sequences, PER priorities, acting states, envs, RNGs)."""
    common = merged(*SMALL, *CUE, "env.kwargs={n_agents: 2, n_cues: 3, delay: 6}", "env.num_envs=2",
                    "algo.seq_len=4", "algo.burn_in=1", "algo.learning_starts=24",
                    "algo.batch_size=4", "algo.buffer_size=200", "algo.per=true", "algo.save_replay=true",
                    "checkpoint.interval=44", "checkpoint.keep_last=2", "eval.interval=0", "total_env_steps=88")
    full = RecurrentDQNTrainer(make_config(CONFIG, *common, run="full"))
    full.train()
    checkpoint = full.ckpt_dir / "step_44.pt"
    assert (ckpt.load(checkpoint)["hidden"]["agent"] != 0).any()  # the copies were mid-episode
    resumed = RecurrentDQNTrainer(make_config(CONFIG, *common, f"resume={checkpoint}", run="resumed"))
    assert resumed.env_steps == 44
    resumed.train()
    for p, q in zip(full.actor.net.parameters(), resumed.actor.net.parameters()):
        assert torch.equal(p, q)
    a, b = full.replay["agent"], resumed.replay["agent"]
    for name, arr in a.fields.items():
        np.testing.assert_array_equal(b.fields[name], arr, err_msg=name)
    np.testing.assert_array_equal(a.sampler.tree.leaves, b.sampler.tree.leaves)
    torch.testing.assert_close(resumed.hidden["agent"], full.hidden["agent"], rtol=0, atol=0)
    assert full.learner.grad_steps == resumed.learner.grad_steps > 0
    assert (a.fields["burn_in"][:len(a)] > 0).any() and (full.hidden["agent"] != 0).any()  # continued sequences


@pytest.mark.parametrize("algo", ["vdn", "qmix"])
def test_team_sequences_stay_in_lockstep_across_groups(tmp_path, algo) -> None:
    """Two groups in one team: the same slot of each group's replay holds the same env steps (cue_recall's
    global state is every agent's observation, stored with the first group: it must match both groups' obs)."""
    cfg = load_config(CONFIG, merged(
        *SMALL, f"algo.name={algo}", *CUE, "env.kwargs={n_agents: 3, n_cues: 3, delay: 5}",
        "env.groups={a: [agent_0, agent_2], b: [agent_1]}", "env.num_envs=3", "algo.seq_len=4", "algo.burn_in=1",
        "algo.learning_starts=30", "algo.batch_size=4", "algo.buffer_size=300", "algo.per=true", "norm.obs=false",
        f"run_dir={tmp_path}"))
    trainer = load_trainer(cfg)
    try:
        assert type(trainer).__name__ == "RecurrentTeamTrainer"
        for _ in range(30):
            trainer.advance()
        a, b = trainer.replay["a"], trainer.replay["b"]
        n = len(a)
        assert n == len(b) > 4 and trainer.learner.grad_steps > 0
        for key in ("valid", "burn_in"):
            np.testing.assert_array_equal(a.fields[key][:n], b.fields[key][:n])
        obs = np.concatenate([a.fields["obs"][:n, :, [0]], b.fields["obs"][:n], a.fields["obs"][:n, :, [1]]], 2)
        if algo == "qmix":  # the mixer's env state is stored with the first group
            np.testing.assert_array_equal(a.fields["state"][:n], obs.reshape(n, 5, -1))
        # every agent of both groups sees its cue at a fresh sequence's first step (only there), and the query
        # flag at the same positions
        fresh, cue = a.fields["burn_in"][:n] == 0, obs[:, 0, :, :3].sum(-1)
        assert (cue[fresh] == 1).all() and (cue[~fresh] == 0).all() and fresh.any() and (~fresh).any()
        assert (obs[..., 3] == obs[..., :1, 3]).all() and obs[..., 3].any()
        assert (a.fields["burn_in"][:n] == 1).any()  # 6-step episodes: continued sequences
        assert a.sampler.prioritized and not b.sampler.prioritized
    finally:
        trainer.close()


MARGIN = 0.8
"""Stated before measuring: the GRU's final eval team return beats the feed-forward one by this much on each seed
(chance, the feed-forward bound, is 0.5; the maximum 2.0)."""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gru_dqn_beats_feed_forward_dqn_on_the_memory_task(tmp_path, seed: int) -> None:
    finals = {}
    for arm in ("gru", "none"):
        run = marl.train("configs/memory_gru_dqn.yaml",
                         overrides=[f"seed={seed}", f"model.recurrent={arm}", "eval.interval=0",
                                    "log.tensorboard=false", "log.progress=false", f"run_dir={tmp_path / arm}"])
        finals[arm] = run.final_return
    assert finals["none"] <= 0.5 + 0.35  # chance, within the noise of 40 evaluation episodes
    assert finals["gru"] - finals["none"] >= MARGIN, finals

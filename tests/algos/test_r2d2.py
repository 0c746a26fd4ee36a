"""Recurrent DQN (R2D2 shape): masks, n-step targets and sequence priorities by hand; the sequence unroll
against a step-by-step rollout of the same core; burn-in gradients; the learner's loss against a naive loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marl.algos.dqn import huber
from marl.algos.r2d2 import (
    RecurrentDQNLearner,
    SequenceBatch,
    loss_mask,
    reset_mask,
    sequence_priority,
    sequence_targets,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

T, F = True, False


def col(*xs) -> torch.Tensor:
    """``[L, 1, 1]`` from per-step values (one sequence, one agent)."""
    return torch.tensor(xs).view(-1, 1, 1)


def test_reset_and_loss_masks_by_hand() -> None:
    # two sequences of L = 4 steps, two agents. Sequence 0: an episode of 3 steps (padding after), agent 1
    # dies at step 1 while agent 0 goes on, both end at step 2. Sequence 1 continues an episode (burn-in 1).
    valid = torch.tensor([[T, T], [T, T], [T, T], [F, T]])  # [L, B]
    ended = torch.zeros(4, 2, 2, dtype=torch.bool)
    ended[1, 0, 1] = ended[2, 0, 0] = ended[2, 0, 1] = True
    ended[3, 1, :] = True  # sequence 1's last step ends its episode
    alive = torch.ones(4, 2, 2, dtype=torch.bool)
    alive[2:, 0, 1] = False  # agent 1 of sequence 0 is dead from step 2
    alive[3, 0, :] = False  # padding
    reset = reset_mask(ended, valid)
    # the state of agent 1 is zeroed after its death (a real step follows); never after a sequence's last
    # valid step (its next position is the bootstrap observation) nor after the last position
    expected = torch.zeros(5, 2, 2, dtype=torch.bool)
    expected[1, 0, 1] = True
    assert torch.equal(reset, expected)
    mask = loss_mask(valid, alive, torch.tensor([0, 1]))
    assert mask[:, 0, 0].tolist() == [T, T, T, F]  # agent 0: the episode's three steps
    assert mask[:, 0, 1].tolist() == [T, T, F, F]  # agent 1: until its death
    assert mask[:, 1, 0].tolist() == [F, T, T, T]  # burn-in step left out
    assert mask[:, 1, 1].tolist() == [F, T, T, T]


def test_sequence_targets_by_hand() -> None:
    gamma = 0.5
    reward, value = col(1.0, 2.0, 4.0), col(0.0, 10.0, 20.0, 30.0)  # value of positions 0..3
    none = col(F, F, F)
    # n = 2; terminal at step 2: y0 = 1 + .5 * 2 + .25 * V(p2); y1 = 2 + .5 * 4 (no bootstrap); y2 = 4
    y = sequence_targets(reward, col(F, F, T), col(F, F, T), torch.ones(3, 1, dtype=torch.bool), value, gamma, 2)
    assert y.flatten().tolist() == [1 + 1 + 0.25 * 20, 2 + 2, 4]
    # the sequence holds two real steps (padding at 2): step 1's window stops there and bootstraps from p2
    valid = torch.tensor([[T], [T], [F]])
    y = sequence_targets(reward, none, none, valid, value, gamma, 2)
    assert y.flatten()[:2].tolist() == [1 + 1 + 0.25 * 20, 2 + 0.5 * 20]
    # time limit of the agent at step 0 (ended, not terminated): the window stops and bootstraps from p1
    y = sequence_targets(reward, none, col(T, F, F), torch.ones(3, 1, dtype=torch.bool), value, gamma, 3)
    assert y.flatten().tolist() == [1 + 0.5 * 10, 2 + 2 + 0.25 * 30, 4 + 0.5 * 30]
    # one-step targets
    y = sequence_targets(reward, none, none, torch.ones(3, 1, dtype=torch.bool), value, gamma, 1)
    assert y.flatten().tolist() == [1 + 5, 2 + 10, 4 + 15]


def test_sequence_priority_by_hand() -> None:
    td = torch.tensor([[1.0, 3.0], [2.0, 5.0], [9.0, 7.0]]).unsqueeze(-1)  # [L=3, B=2, A=1]
    mask = torch.tensor([[T, T], [T, T], [F, T]]).unsqueeze(-1)  # step 2 of sequence 0 not in the loss
    p = sequence_priority(td, mask, 0.9)
    torch.testing.assert_close(p, torch.tensor([0.9 * 2 + 0.1 * 1.5, 0.9 * 7 + 0.1 * 5]))
    assert sequence_priority(td, torch.zeros_like(mask), 0.9).tolist() == [0.0, 0.0]


def make_net(make_learner, discrete_spec, *overrides, n_agents=2, mask=False):
    spec = discrete_spec(n_agents=n_agents, obs_dim=3, n_actions=4, mask=mask)
    return make_learner("dqn", spec, "model.recurrent=gru", "model.rnn_hidden=8", "model.hidden=[16]", *overrides)


def random_sequences(L, B, A, gen, n_actions=4, with_mask=False):
    obs = torch.randn(L + 1, B, A, 3, generator=gen)
    alive = torch.rand(L + 1, B, A, generator=gen) < 0.8
    ended = torch.rand(L, B, A, generator=gen) < 0.2
    mask = torch.rand(L + 1, B, A, n_actions, generator=gen) < 0.6 if with_mask else None
    return obs, alive, ended, mask


@pytest.mark.parametrize("model", [
    ["model.sharing=shared"], ["model.sharing=independent"], ["model.sharing=independent", "model.recurrent=lstm"],
    ["algo.dueling=true"],
], ids=["gru-shared", "gru-independent", "lstm-independent", "dueling"])
def test_unroll_equals_a_step_by_step_rollout(model, make_learner, discrete_spec) -> None:
    q, _ = make_net(make_learner, discrete_spec, *model, n_agents=3)
    net = q["agent"]
    gen = torch.Generator().manual_seed(0)
    obs, alive, _, mask = random_sequences(6, 5, 3, gen, with_mask=True)
    reset = torch.rand(7, 5, 3, generator=gen) < 0.25
    hidden = torch.randn(5, 3, net.state_size, generator=gen)
    with torch.no_grad():
        seq = net.unroll(obs, hidden, alive, reset, mask)
        burned = net.unroll(obs, hidden, alive, reset, mask, burn_in=2, stale=torch.tensor([T, F, T, F, T]))
        h, steps = hidden, []
        for p in range(7):  # what the actor does: one step, then zero where the agent's trajectory ended
            q_p, h = net.step(obs[p], h, alive[p], mask[p])
            h = h * (~reset[p]).unsqueeze(-1)
            steps.append(q_p)
    torch.testing.assert_close(seq, torch.stack(steps), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(burned, seq, rtol=0, atol=0)  # detaching changes gradients, not values


def test_burn_in_steps_give_no_gradient(make_learner, discrete_spec) -> None:
    q, _ = make_net(make_learner, discrete_spec)
    net = q["agent"]
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(6, 2, 2, 3, generator=gen, requires_grad=True)
    alive = torch.ones(6, 2, 2, dtype=torch.bool)
    reset = torch.zeros(6, 2, 2, dtype=torch.bool)
    out = net.unroll(obs, net.zero_state(2), alive, reset, None, burn_in=3, stale=torch.tensor([T, F]))
    out[3:].sum().backward()  # the loss reads the steps after the burn-in only
    assert (obs.grad[:3, 0] == 0).all()  # stale sequence: its burn-in only warms the state
    assert (obs.grad[:3, 1] != 0).any()  # a sequence starting at its episode's first step trains through them
    assert (obs.grad[3:] != 0).any()


def naive_losses(learner, b: SequenceBatch, gamma: float, n_step: int, eta: float):
    """The learner's loss and priorities with Python loops over sequences, agents and steps."""
    net, target = learner.q["agent"], learner.target["agent"]
    L, B, A = b.action.shape
    with torch.no_grad():
        qs = {}
        for name, m in (("online", net), ("target", target)):
            h, out = b.hidden, []
            for p in range(L + 1):
                q_p, h = m.step(b.obs[p], h, b.alive[p], None if b.action_mask is None else b.action_mask[p])
                out.append(q_p)
                if p < L - 1:  # zero where an agent ended and a real step follows
                    keep = ~(b.ended[p] & b.valid[p + 1].unsqueeze(-1))
                    h = h * keep.unsqueeze(-1)
            qs[name] = torch.stack(out)
    total, count, prio = 0.0, 0, []
    for s in range(B):
        errs = []
        for a in range(A):
            for t in range(L):
                if not (b.valid[t, s] and b.alive[t, s, a] and t >= int(b.burn_in[s])):
                    continue
                y = 0.0
                for k in range(n_step):
                    y += gamma ** k * float(b.reward[t + k, s, a])
                    last = k == n_step - 1 or bool(b.ended[t + k, s, a]) or t + k + 1 >= L or not b.valid[t + k + 1, s]
                    if last:
                        if not b.terminated[t + k, s, a]:
                            qo = qs["online"][t + k + 1, s, a].clone()
                            if b.action_mask is not None and b.action_mask[t + k + 1, s, a].any():
                                qo[~b.action_mask[t + k + 1, s, a]] = -torch.inf
                            y += gamma ** (k + 1) * float(qs["target"][t + k + 1, s, a, int(qo.argmax())])
                        break
                q = qs["online"][t, s, a, int(b.action[t, s, a])]
                total += float(b.weights[s]) * float(huber(q, torch.tensor(y)))
                count += 1
                errs.append(abs(float(q) - y))
        prio.append(eta * max(errs) + (1 - eta) * sum(errs) / len(errs) if errs else 0.0)
    return total / count, torch.tensor(prio)


@pytest.mark.parametrize("n_step", [1, 3])
def test_learner_loss_equals_a_naive_loop(n_step, make_learner, discrete_spec) -> None:
    """Burn-in, padding, a dead agent, a terminal step, n-step windows, double Q over allowed actions, PER weights."""
    q, learner = make_net(make_learner, discrete_spec, f"algo.n_step={n_step}", "algo.seq_len=6", "algo.burn_in=2",
                          "algo.per_eta=0.7", "algo.gamma=0.9", mask=True)
    assert isinstance(learner, RecurrentDQNLearner)
    with torch.no_grad():  # a target that differs from the online network
        for p in learner.target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(3)
    L, B, A = 6, 4, 2
    obs, alive, ended, mask = random_sequences(L, B, A, gen, with_mask=True)
    valid = torch.ones(L, B, dtype=torch.bool)
    valid[4:, 2] = False  # sequence 2: an episode that ended after 4 steps (padding)
    terminated = ended & (torch.rand(L, B, A, generator=gen) < 0.5)
    batch = SequenceBatch(obs, torch.randint(0, 4, (L, B, A), generator=gen), torch.randn(L, B, A, generator=gen),
                          terminated, ended, alive, valid, torch.tensor([0, 2, 0, 2]),
                          torch.randn(B, A, q["agent"].state_size, generator=gen), torch.rand(B, generator=gen), mask)
    total, priority, _ = learner.losses({"agent": batch})
    want_loss, want_priority = naive_losses(learner, batch, 0.9, n_step, 0.7)
    assert abs(total.item() - want_loss) < 1e-5
    torch.testing.assert_close(priority["agent"], want_priority.float(), rtol=1e-4, atol=1e-5)


def naive_team_losses(learner, b, gamma: float, eta: float, n_step: int = 1, standardize: bool = False,
                      earlier: np.ndarray | None = None, reg: float = 0.0):
    """The recurrent team learner's loss and priorities with Python loops over sequences, steps and windows;
    ``earlier``: the TD targets folded into the learner's return statistics before (``algo.standardize_returns``);
    ``reg``: ``algo.return_reg``'s weight (the penalty on the trained steps whose episode ends inside the
    sequence)."""
    from marl.algos.value_decomposition import td_loss

    L, B = next(iter(b.groups.values())).valid.shape
    qs = {}
    with torch.no_grad():
        for name, g in b.groups.items():
            for kind, nets in (("online", learner.q), ("target", learner.target)):
                h, out = g.hidden, []
                for p in range(L + 1):
                    q_p, h = nets[name].step(g.obs[p], h, g.alive[p], g.action_mask[p])
                    out.append(q_p)
                    if p < L - 1:
                        h = h * (~(g.ended[p] & g.valid[p + 1].unsqueeze(-1))).unsqueeze(-1)
                qs[name, kind] = torch.stack(out)
    first = next(iter(b.groups.values()))

    def cat(field: str, t: int, s: int) -> torch.Tensor:
        return torch.cat([getattr(g, field)[t, s] for g in b.groups.values()])

    rewards = {(t, s): float((cat("reward", t, s) * cat("alive", t, s)).sum()) for t in range(L) for s in range(B)}
    raw = dict(rewards)

    def team_end(u: int, s: int) -> bool:
        alive_u = cat("alive", u, s)
        return bool((cat("ended", u, s) | ~alive_u).all()) and bool(alive_u.any())

    def mc_return(t: int, s: int) -> tuple[float, bool]:
        """Walk the sequence from step t: raw team rewards until the team ends (whole) or the real steps run out."""
        g, u = 0.0, t
        while True:
            g += gamma ** (u - t) * raw[u, s]
            if team_end(u, s):
                return g, True
            if u + 1 >= L or not first.valid[u + 1, s]:
                return g, False
            u += 1
    if standardize:  # over the steps where some agent acts
        acting = [r for (t, s), r in rewards.items() if first.valid[t, s] and cat("alive", t, s).any()]
        mean = sum(acting) / len(acting)
        std = (sum((r - mean) ** 2 for r in acting) / (len(acting) - 1)) ** 0.5
        rewards = {(t, s): (r - mean) / (std + 1e-5) if cat("alive", t, s).any() else 0.0
                   for (t, s), r in rewards.items()}  # a step where no agent acts pays 0

    def bootstrap(t: int, s: int) -> float:
        """The target mixer's value of position t + 1 after step t (agents terminated at t left out)."""
        nxt = []
        for name, g in b.groups.items():
            for a in range(g.action.shape[-1]):
                qo = qs[name, "online"][t + 1, s, a].clone()
                qo[~g.action_mask[t + 1, s, a]] = -torch.inf
                nxt.append(qs[name, "target"][t + 1, s, a, int(qo.argmax())])
        next_alive = cat("alive", t + 1, s) & ~cat("terminated", t, s)
        with torch.no_grad():
            v = float(learner.target_mixer(torch.stack(nxt)[None], b.state[t + 1, s][None], next_alive[None]))
        return v if earlier is None else v * (earlier.std() + 1e-5) + earlier.mean()  # in return units

    trained = []  # (sequence, weight, q_tot, target in return units)
    for s in range(B):
        for t in range(L):
            alive = cat("alive", t, s)
            if not (first.valid[t, s] and t >= int(first.burn_in[s]) and alive.any()):
                continue
            taken = [qs[name, "online"][t, s, a, int(g.action[t, s, a])]
                     for name, g in b.groups.items() for a in range(g.action.shape[-1])]
            y = 0.0
            for k in range(n_step):
                u = t + k
                y += gamma ** k * rewards[u, s]
                alive_u = cat("alive", u, s)
                ended = bool((cat("ended", u, s) | ~alive_u).all()) and bool(alive_u.any())
                if k == n_step - 1 or ended or u + 1 >= L or not first.valid[u + 1, s]:
                    if not bool((cat("terminated", u, s) | ~alive_u).all()):
                        y += gamma ** (k + 1) * bootstrap(u, s)
                    break
            with torch.no_grad():
                q_tot = learner.mixer(torch.stack(taken)[None], b.state[t, s][None], alive[None])
            trained.append((s, float(first.weights[s]), q_tot, y, *mc_return(t, s)))
    if earlier is not None:  # every target joins the statistics, then targets and returns are standardized
        seen = np.concatenate([earlier, [y for _, _, _, y, _, _ in trained]])
        mean, std = seen.mean(), seen.std() + 1e-5
        trained = [(s, w, q, (y - mean) / std, (g - mean) / std, whole) for s, w, q, y, g, whole in trained]
    total = sum(w * float(td_loss(q, torch.tensor([y]), "mse")) for _, w, q, y, _, _ in trained) / len(trained)
    whole = [(w, q, g) for _, w, q, _, g, ok in trained if ok]
    assert 0 < len(whole) < len(trained)  # whole and partial returns both occur
    if reg:
        total += reg * sum(w * (float(q) - g) ** 2 for w, q, g in whole) / len(whole)
    trained = [row[:4] for row in trained]
    prio = []
    for s in range(B):
        errs = [abs(float(q) - y) for seq, _, q, y in trained if seq == s]
        prio.append(eta * max(errs) + (1 - eta) * sum(errs) / len(errs) if errs else 0.0)
    return total, torch.tensor(prio)


@pytest.mark.parametrize("algo,n_step,standardize,returns,reg", [
    ("vdn", 1, False, False, 0.0), ("qmix", 1, False, False, 0.0), ("vdn", 3, True, False, 0.0),
    ("qmix", 3, False, False, 0.0), ("qmix", 2, True, False, 0.0), ("qmix", 1, False, True, 0.0),
    ("vdn", 3, True, True, 0.0), ("qmix", 1, False, False, 0.3), ("vdn", 3, False, True, 0.5)])
def test_team_learner_loss_equals_a_naive_loop(algo, n_step, standardize, returns, reg, discrete_spec) -> None:
    """Two groups in one team, burn-in, padding, a dead agent, terminal steps, double Q over allowed actions,
    n-step team windows (closed at the team's end), rewards standardized over the acting steps, TD targets
    standardized by running statistics (the target mixer's values mapped back to returns first), and the return
    regularizer on the steps whose episode ends inside the sequence (against the standardized statistics too)."""
    from dataclasses import replace

    from marl.algos.r2d2 import RecurrentValueDecompositionLearner, TeamSequenceBatch
    from marl.algos.value_decomposition import build_mixer
    from marl.config import load_config
    from marl.off_policy import build_actor
    from marl.types import EnvSpec

    one = discrete_spec(n_agents=2, obs_dim=3, n_actions=4, mask=True)
    spec = EnvSpec(("a_0", "a_1", "b_0"), (replace(one.groups[0], name="a", agents=("a_0", "a_1")),
                                           replace(one.groups[0], name="b", agents=("b_0",))), state_shape=(5,))
    cfg = load_config(None, [f"algo.name={algo}", "norm.reward=false", "norm.obs=false", "model.recurrent=gru",
                             "model.rnn_hidden=8", "model.hidden=[16]", "algo.seq_len=5", "algo.burn_in=2",
                             "algo.per_eta=0.6", "algo.gamma=0.9", f"algo.n_step={n_step}",
                             f"algo.standardize_rewards={str(standardize).lower()}",
                             f"algo.standardize_returns={str(returns).lower()}", f"algo.return_reg={reg}"])
    torch.manual_seed(0)
    actor = build_actor(spec, cfg)
    learner = RecurrentValueDecompositionLearner(actor.net, build_mixer(spec, cfg.algo, 5), cfg.algo)
    with torch.no_grad():
        for p in [*learner.target.parameters(), *learner.target_mixer.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(4)
    L, B = 5, 3
    valid = torch.ones(L, B, dtype=torch.bool)
    valid[3:, 1] = False
    burn = torch.tensor([0, 0, 2])
    weights = torch.rand(B, generator=gen)
    groups = {}
    for name, n in (("a", 2), ("b", 1)):
        obs, alive, ended, mask = random_sequences(L, B, n, gen, with_mask=True)
        mask[..., 0] = True
        alive[1, 0] = False  # a step of sequence 0 where no agent acts: out of the loss and the reward statistics
        ended[2, 0] = ended[3, 2] = True  # the team's episode ends inside sequences 0 and 2 (whole returns)
        groups[name] = SequenceBatch(obs, torch.randint(0, 4, (L, B, n), generator=gen),
                                     torch.randn(L, B, n, generator=gen), ended & (torch.rand(L, B, n, generator=gen)
                                                                                  < 0.5),
                                     ended, alive, valid, burn, torch.randn(B, n, 8, generator=gen), weights, mask)
    batch = TeamSequenceBatch(groups, torch.randn(L + 1, B, 5, generator=gen))
    earlier = np.array([-3.0, 1.5, -0.5, 2.0]) if returns else None
    if returns:
        learner.return_stats.update(earlier)
    loss, priority, _ = learner.losses(batch)
    want_loss, want_priority = naive_team_losses(learner, batch, 0.9, 0.6, n_step, standardize, earlier, reg)
    assert abs(loss.item() - want_loss) < 1e-5
    torch.testing.assert_close(priority, want_priority.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("epsilon", [0.0, 0.5])
def test_recurrent_acting_respects_masks_and_carries_the_state(epsilon, learner_config, discrete_spec) -> None:
    import numpy as np

    from marl.off_policy import build_actor
    from marl.types import GroupObs

    spec = discrete_spec(n_agents=2, obs_dim=3, n_actions=5, mask=True)
    actor = build_actor(spec, learner_config("dqn", "model.recurrent=lstm", "model.rnn_hidden=8", "model.hidden=[16]"))
    rng = np.random.default_rng(0)
    hidden = actor.initial_hidden(64)
    for _ in range(4):
        mask = rng.random((64, 2, 5)) < 0.5
        mask[np.arange(64), 0, rng.integers(0, 5, 64)] = True
        alive = rng.random((64, 2)) < 0.8
        obs = {"agent": GroupObs(rng.standard_normal((64, 2, 3)).astype(np.float32), alive, mask)}
        out = actor.act(obs, epsilon=epsilon, hidden=hidden)
        action = out.action["agent"].numpy()
        allowed = np.take_along_axis(mask, action[..., None], -1)[..., 0]
        assert allowed[mask.any(-1)].all()
        # an agent that does not act keeps its state; the others' states move
        acted = torch.as_tensor(alive)
        torch.testing.assert_close(out.hidden["agent"][~acted], hidden["agent"][~acted], rtol=0, atol=0)
        assert (out.hidden["agent"][acted] != hidden["agent"][acted]).any()
        hidden = out.hidden

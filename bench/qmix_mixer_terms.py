"""QMIX's mixer during training: what grows when Q_tot diverges (bench/README.md, "Value decomposition").

Trains ``--config`` (default ``configs/spread_qmix.yaml``, on the batched simulation: ``--backend``) for
``--steps`` env steps (overrides as ``key=value``) and every ``--every`` gradient steps prints, on 512 replayed
team rows (raw mixer units: standardized ones with ``algo.standardize_returns``):

* ``q_tot``: the mixer's output on the replayed actions, and ``q_mean`` (``train/q_mean``, return units);
* ``q_agent``: the agents' mean Q of the replayed actions;
* ``v``: the final bias ``V(s)``; ``bias``: ``sum_e |w_2e(s)| elu(b_1e(s))``, the mixer's output at ``Q = 0``
  without ``V(s)``;
* ``|w1|``, ``|w2|``: mean absolute hypernetwork weights; ``gain``: mean ``dQ_tot / dQ_a`` (1 for VDN);
* ``loss``: ``train/q_loss`` of that step.

After training it checks the stored global states against the observations (on spread the env's ``state()``
is every agent's observation concatenated): the largest ``|state - concat(obs)|`` and
``|next_state_n - concat(next_obs_n)|`` of the replay (0 = the mixer sees the state of each row's own step,
and the real final state at the time limit).

    python bench/qmix_mixer_terms.py --steps 300000 algo.standardize_returns=false
    python bench/qmix_mixer_terms.py --steps 300000
    python bench/qmix_mixer_terms.py --config configs/lbf_8x8_2p_2f_coop_qmix.yaml --backend sync --steps 300000
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.nn import functional as F

from marl.algos.value_decomposition import obs_state
from marl.config import load_config
from marl.off_policy.team import TeamBatch, TeamTrainer, team_samples, to_team_batch


def mixer_terms(trainer: TeamTrainer, b: TeamBatch) -> dict[str, float]:
    """The mixer's terms on the team rows ``b`` (see the module docstring)."""
    learner = trainer.learner
    mixer = learner.mixer
    state = b.state if b.state is not None else obs_state([g.obs for g in b.groups.values()])
    with torch.no_grad():
        q, _ = learner.agent_values(b)
    q = q.requires_grad_(True)
    q_tot = mixer(q, state)
    (gain,) = torch.autograd.grad(q_tot.sum(), q)
    with torch.no_grad():
        w2 = mixer.hyper_w2(state).abs()
        return {"q_tot": float(q_tot.mean()), "q_agent": float(q.mean()), "v": float(mixer.value(state).mean()),
                "bias": float((F.elu(mixer.hyper_b1(state)) * w2).sum(-1).mean()),
                "|w1|": float(mixer.hyper_w1(state).abs().mean()), "|w2|": float(w2.mean()),
                "gain": float(gain.mean())}


class ReportingTrainer(TeamTrainer):
    """:class:`TeamTrainer` printing :func:`mixer_terms` every ``every`` gradient steps."""

    every, rows = 1000, 512

    def train_step(self) -> dict[str, float]:
        metrics = super().train_step()
        steps = self.learner.grad_steps
        if steps % self.every == 0:
            first, rows = team_samples(self.replay, self.rows, np.random.default_rng(steps), None)
            terms = mixer_terms(self, to_team_batch(first, rows, self.actor.obs_norm, self.device))
            terms.update(q_mean=float(metrics["q_mean"]), loss=float(metrics["q_loss"]))
            print(f"env_steps {self.env_steps:7d} grad_steps {steps:6d} "
                  + " ".join(f"{k} {v:.3g}" for k, v in terms.items()), flush=True)
        return metrics


def state_mismatch(trainer: TeamTrainer) -> tuple[float, float]:
    """Largest ``|state - concat(obs)|`` over the stored rows and ``|next_state_n - concat(next_obs_n)|`` over
    1024 sampled n-step windows."""
    buf = trainer.replay[next(iter(trainer.replay))]
    n = int(buf.storage.size.max())
    obs, state = buf.storage.field("obs")[:n], buf.storage.field("state")[:n]
    sample = buf.sample(1024, np.random.default_rng(0), None)
    return (float(np.abs(state - obs.reshape(*obs.shape[:2], -1)).max()),
            float(np.abs(sample.next_state_n - sample.next_obs_n.reshape(1024, -1)).max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/spread_qmix.yaml", help="a qmix config")
    parser.add_argument("--backend", default="batched", help="env.backend")
    parser.add_argument("--steps", type=int, default=300_000, help="env steps")
    parser.add_argument("--every", type=int, default=1000, help="gradient steps between reports")
    parser.add_argument("--run-dir", default="/tmp/qmix_mixer_terms")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config, [
        f"run_dir={args.run_dir}", f"total_env_steps={args.steps}", f"env.backend={args.backend}",
        "log.tensorboard=false", "log.progress=false", "log.interval=100000", "eval.interval=0", "eval.episodes=20",
        "eval.num_envs=20", "eval.stochastic_check=false", *args.overrides])
    ReportingTrainer.every = args.every
    trainer = ReportingTrainer(cfg)
    summary = trainer.train()
    print(f"final greedy eval (20 episodes): {summary['final_eval']['ep_return']:.2f}")
    if trainer.with_state:
        rows, windows = state_mismatch(trainer)
        print(f"largest |state - concat(obs)|: {rows:.3g}, |next_state_n - concat(next_obs_n)|: {windows:.3g}")


if __name__ == "__main__":
    main()

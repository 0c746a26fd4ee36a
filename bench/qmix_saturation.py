"""A trained QMIX mixer on the states its own policy visits: gain dQ_tot/dQ_a and how saturated its ELU layer is.

Loads a checkpoint (``latest.pt`` of a QMIX run), plays ``--steps`` vector steps of ``--envs`` env copies with the
checkpoint's policy (epsilon-greedy with ``algo.epsilon_final``, as its evaluation), and on those team steps prints
the agents' Q of the actions taken, the mixer's hidden pre-activations ``Q @ |W_1(s)| + b_1(s)`` (the fraction
below 0 and below -2), the mean ELU slope, the mean ``|W_1|``, ``|W_2|`` and the mean gain ``dQ_tot / dQ_a``::

    python bench/qmix_saturation.py bench/out/lbf_qmix/seed0/checkpoints/latest.pt
"""

from __future__ import annotations

import argparse

import torch

from marl.algos.value_decomposition import build_mixer, obs_state
from marl.api import load_policy
from marl.env.make import vector_env
from marl.off_policy.team import mixer_state_dim


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--steps", type=int, default=200, help="vector steps played")
    p.add_argument("--envs", type=int, default=4, help="env copies")
    args = p.parse_args()
    torch.set_num_threads(1)
    state = torch.load(args.checkpoint, weights_only=False, map_location="cpu")
    policy, cfg, _ = load_policy(args.checkpoint)
    if cfg.algo.name != "qmix" or len(policy.spec.groups) != 1:
        raise SystemExit(f"{args.checkpoint}: a one-group QMIX run is needed, this one is {cfg.algo.name}")
    env = vector_env(cfg, args.envs, backend="sync")
    spec = env.spec
    if cfg.algo.state == "env" and spec.state_shape is not None:
        raise SystemExit("the mixer reads the env's state(); this script rebuilds the observation state only")
    mixer = build_mixer(spec, cfg.algo, mixer_state_dim(spec, cfg.algo))
    mixer.load_state_dict(state["learner"]["mixer"])
    group = spec.groups[0].name
    norm = policy.obs_norm.get(group)
    obs, _ = env.reset(seed=cfg.seed + 1000)
    qs, states = [], []
    for _ in range(args.steps):
        out = policy.act(obs, deterministic=False)
        o = torch.as_tensor(obs[group].obs if norm is None else norm.normalize(obs[group].obs))
        with torch.no_grad():
            q = policy.net[group](o)
        qs.append(q.gather(-1, out.action[group].long().unsqueeze(-1)).squeeze(-1))
        states.append(obs_state([o]))
        obs = env.step(out.action).obs
    env.close()
    q, s = torch.cat(qs), torch.cat(states)
    b = q.shape[0]
    with torch.no_grad():
        w1 = mixer.hyper_w1(s).abs().view(b, mixer.n_agents, mixer.embed)
        pre = q.unsqueeze(1).bmm(w1).squeeze(1) + mixer.hyper_b1(s)  # [B, E]
        w2 = mixer.hyper_w2(s).abs()  # [B, E]
        slope = torch.where(pre > 0, torch.ones_like(pre), pre.exp())  # ELU'
        gain = ((slope * w2).unsqueeze(1) * w1).sum(-1)  # [B, A]
    print(f"{b} team steps: agents' Q {q.mean():.3f} ± {q.std():.3f}; hidden pre-activations mean {pre.mean():.3f}, "
          f"{(pre < 0).float().mean():.0%} below 0, {(pre < -2).float().mean():.0%} below -2; mean ELU slope "
          f"{slope.mean():.3f}; |W_1| {w1.mean():.3f}, |W_2| {w2.mean():.3f}; gain dQ_tot/dQ_a {gain.mean():.3f}")


if __name__ == "__main__":
    main()

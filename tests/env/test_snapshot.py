"""Env snapshots: a restored vector env continues exactly like the original."""

import functools

import numpy as np
import pytest
import torch

from marl.env.adapters import EnvSnapshot
from marl.env.make import make_adapter
from marl.env.vector import make_vector_env

CASES = [
    ("mpe2.simple_spread_v3", {"N": 3, "max_cycles": 10}),
    ("CartPole-v1", {}),
    ("envs.coop_gather", {}),
    ("pettingzoo.classic.tictactoe_v3", {}),
]


def random_actions(spec, n, rng, obs):
    out = {}
    for g in spec.groups:
        if g.discrete:
            k = int(g.action_space.n)
            mask = obs[g.name].action_mask
            scores = rng.random((n, g.n_agents, k)) * (1 if mask is None else mask)
            out[g.name] = scores.argmax(-1).astype(np.int64)
        else:
            out[g.name] = rng.uniform(-1, 1, (n, g.n_agents, *g.action_shape)).astype(np.float32)
    return out


def run(venv, obs, steps, rng):
    trace = []
    for _ in range(steps):
        step = venv.step(random_actions(venv.spec, venv.num_envs, rng, obs))
        trace.append((
            {g: o.obs.copy() for g, o in step.obs.items()},
            {g: t.reward.copy() for g, t in step.transition.items()},
            [(e.env_index, e.length, tuple(e.returns.values())) for e in step.episodes],
        ))
        obs = step.obs
    return trace


@pytest.mark.parametrize("env_id, kwargs", CASES)
@pytest.mark.parametrize("backend", ["sync", "subprocess"])
def test_restore_continues_exactly(env_id, kwargs, backend, tmp_path):
    factory = functools.partial(make_adapter, env_id, kwargs)
    rng = np.random.default_rng(0)
    with make_vector_env(factory, 3, backend="sync") as venv:
        obs, _ = venv.reset(5)
        for _ in range(13):  # mid-episode for some copies, after an auto-reset for others
            obs = venv.step(random_actions(venv.spec, 3, rng, obs)).obs
        snaps = venv.snapshot()
        # Snapshots are plain data: they survive a weights_only checkpoint.
        payload = [s._replace(actions={g: torch.from_numpy(a) for g, a in s.actions.items()}) for s in snaps]
        torch.save([tuple(p) for p in payload], tmp_path / "snap.pt")
        loaded = [EnvSnapshot(*x) for x in torch.load(tmp_path / "snap.pt", weights_only=True)]
        state = rng.bit_generator.state
        expected = run(venv, obs, 20, rng)
    rng.bit_generator.state = state
    with make_vector_env(factory, 3, backend=backend, num_workers=2 if backend == "subprocess" else None) as other:
        restored = [s._replace(actions={g: a.numpy() for g, a in s.actions.items()}) for s in loaded]
        obs2, _ = other.restore(restored)
        for g in obs:
            np.testing.assert_array_equal(obs2[g].obs, obs[g].obs)
        got = run(other, obs2, 20, rng)
    for (o1, r1, e1), (o2, r2, e2) in zip(expected, got):
        for g in o1:
            np.testing.assert_array_equal(o1[g], o2[g])
            np.testing.assert_array_equal(r1[g], r2[g])
        assert e1 == e2

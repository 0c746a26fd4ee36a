"""Ape-X actors on Ray (``algo.num_actors > 0 runtime=ray``): a Ray actor's batch equals an in-process ApexActor's
with the same seeds; a run on a real local Ray instance learns with its actors, survives a killed one, checkpoints
and leaves no actor behind."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("CI"):
    import ray  # noqa: F401 - CI installs every extra: a missing one fails here, never skips
else:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e .[ray])")

import ray  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from marl import checkpoint as ckpt  # noqa: E402
from marl.config import load_config  # noqa: E402
from marl.off_policy.apex import ApexActor, ApexTrainer  # noqa: E402
from marl.on_policy.ray_workers import RayWorkerPool  # noqa: E402
from marl.on_policy.workers import to_numpy  # noqa: E402
from marl.registry import algorithm  # noqa: E402
from marl.seeding import seeds_for  # noqa: E402
from tests.processes import wait_gone  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "cartpole_dqn.yaml")
SMALL = ("runtime=ray", "ray.cpus_per_worker=0.5", "algo.num_actors=2", "env.num_envs=4", "model.hidden=[32]",
         "algo.learning_starts=200", "algo.batch_size=32", "algo.train_freq=16", "algo.gradient_steps=4",
         "algo.actor_batch=8", "algo.weight_sync_interval=4", "algo.target_update_interval=20", "eval.episodes=2",
         "log.progress=false", "torch_threads=1")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (the runs join it instead of starting their own)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def scaled(tree, factor: float = -1.7):
    """Every float array of a nested state scaled by ``factor`` (other leaves unchanged)."""
    if isinstance(tree, dict):
        return {k: scaled(v, factor) for k, v in tree.items()}
    if isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        return tree * factor
    return tree


def test_apex_on_ray_is_accepted_whatever_the_ray_split():
    # ray.num_workers (default 2) and ray.envs_per_worker do not split the copies here: the actors do
    cfg = load_config(CONFIG, [*SMALL, "algo.num_actors=3", "env.num_envs=3"])
    assert algorithm("dqn").trainer_class(cfg) is ApexTrainer


def test_a_ray_actors_batch_equals_an_in_process_actors_with_the_same_seeds(local_ray):
    """Warm-up (no weights: uniformly random actions from the actor's own generator), then with weights: the rows,
    lanes, versions and episodes that come back through Ray are those of an ApexActor built here."""
    cfg = load_config(CONFIG, [*SMALL, "algo.num_actors=1", "env.num_envs=2", "algo.actor_batch=30"])
    seeds = seeds_for(cfg.seed, 2)
    pool = RayWorkerPool(cfg, 1, lambda w, g: seeds, make_worker=lambda w: functools.partial(ApexActor, epsilon=0.3),
                         label="apex")
    try:
        pool.start()
        remote = [pool.next_rollout()]
        here = ApexActor(cfg, 0, range(0, 2), seeds,
                         int(np.random.SeedSequence([cfg.seed, 0, 0]).generate_state(1)[0]), epsilon=0.3)
        local = [here.collect()]
        weights = to_numpy(here.policy.state_dict())
        weights = {**weights, "net": scaled(weights["net"])}  # other networks: acting with them differs from before
        pool.broadcast(weights, 5)
        here.set_weights(weights, 5)
        remote.append(pool.next_rollout())
        local.append(here.collect())
        here.close()
    finally:
        pool.close()
    assert [b.version for b in remote] == [-1, 5]
    for got, want in zip(remote, local, strict=True):
        np.testing.assert_array_equal(got.step_versions, want.step_versions)
        np.testing.assert_array_equal(got.lanes, [0, 1])
        assert got.env_steps == want.env_steps == 60 and got.agent_steps == want.agent_steps
        assert [(e.env_index, e.length, e.returns) for e in got.episodes] == \
            [(e.env_index, e.length, e.returns) for e in want.episodes]
        for g, fields in want.rows.items():
            for key, value in fields.items():
                np.testing.assert_array_equal(got.rows[g][key], value, err_msg=key)
    assert len(remote[0].episodes) > 0  # CartPole under random actions ends episodes within 30 steps


def test_run_learns_with_ray_actors_survives_a_killed_one_checkpoints_and_leaves_none(local_ray, tmp_path):
    run = tmp_path / "run"
    trainer = ApexTrainer(load_config(CONFIG, [*SMALL, f"run_dir={run}", "total_env_steps=2000", "log.interval=2",
                                               "eval.interval=0"]))
    try:
        trainer.advance()
        pids = trainer.pool.pids()
        os.kill(pids[0], 9)
        with pytest.warns(RuntimeWarning, match=r"apex ray worker 0 \(env copies 0..1\) was lost"):
            summary = trainer.train()
        pids += trainer.pool.pids() if trainer.pool is not None else []
    finally:
        trainer.close()
    assert summary["env_steps"] >= 2000 and summary["grad_steps"] > 0
    state = ckpt.load(run / "checkpoints" / "latest.pt")
    assert state["apex"]["actor_restarts"] == 1
    assert 0 <= state["apex"]["weight_version"] <= summary["grad_steps"]
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert min(e.value for e in acc.Scalars("apex/weight_lag_mean")) >= 0
    assert acc.Scalars("apex/epsilon_1")[-1].value == pytest.approx(0.4 ** 8)
    assert wait_gone(pids) == []
    assert ray.is_initialized()  # the module's instance: the run joined it and left it running

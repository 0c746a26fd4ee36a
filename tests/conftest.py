"""Fixtures shared by the test files: one torch thread, configs in a fresh run directory, tiny budgets,
the builders of the off-policy learner tests (specs, configs, learners, batches, a constant-reward env),
and the two-node Ray cluster of the ``runtime=ray`` tests (``cluster``, started once per session)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
import pytest
import torch
from torch import nn

from marl.algos.targets import OffPolicyBatch
from marl.config import Config, load_config
from marl.types import EnvSpec, GroupSpec

if TYPE_CHECKING:
    from marl.off_policy.actor import Learner

QUIET = ("log.tensorboard=false", "log.progress=false")

# Ray without token authentication in this process and every process it starts (the test cluster's nodes, the
# drivers, the runs' local instances). Left to Ray, the mode would depend on what ran before in this process: a
# local ray.init turns it on for the rest of the process (RAY_AUTH_MODE=token in os.environ, and cached in Ray's
# core), and a driver connecting, or a node added back, after that requires tokens that the rest of the test cluster
# never sends: actors owned by that driver or placed on that node die before they run. tests/test_ray_join.py
# checks token authentication on clusters started with Ray's default.
os.environ["RAY_AUTH_MODE"] = "disabled"


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Small networks run fastest, and reproducibly, on one thread (two oversubscribe a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def quiet() -> tuple[str, ...]:
    """Overrides that turn off TensorBoard files and the progress bar (for ``marl train`` command lines)."""
    return QUIET


@pytest.fixture
def make_config(tmp_path) -> Callable[..., Config]:
    """``make_config(path, *overrides, run="run", quiet=True)``: ``load_config(path, overrides)`` with
    ``run_dir=<tmp_path>/<run>``; ``quiet`` adds ``log.tensorboard=false log.progress=false`` first
    (an override after it wins). ``path=None`` starts from the embedded defaults."""

    def make(path: str | None, *overrides: str, run: str = "run", quiet: bool = True) -> Config:
        return load_config(path, [f"run_dir={tmp_path / run}", *(QUIET if quiet else ()), *overrides])

    return make


@pytest.fixture
def tiny_ppo() -> tuple[str, ...]:
    """Overrides of ``configs/simple_spread_ppo.yaml`` for an 800-env-step run (16 iterations, evals at 400, 800)."""
    return ("total_env_steps=800", "env.num_envs=4", "algo.num_steps=50", "algo.num_minibatches=2",
            "algo.update_epochs=2", "eval.interval=400", "eval.episodes=2", "eval.num_envs=2", "log.progress=false",
            "checkpoint.interval=400")


@pytest.fixture
def tiny_dqn() -> tuple[str, ...]:
    """Overrides of ``configs/cartpole_dqn.yaml`` for a 1200-env-step run: training every 50 env steps
    (5 gradient steps) from row 200 on, a log every training phase, evals at 600 and 1200."""
    return ("total_env_steps=1200", "algo.learning_starts=200", "algo.train_freq=50", "algo.gradient_steps=5",
            "model.hidden=[32]", "eval.interval=600", "eval.episodes=2", "eval.num_envs=2", "log.interval=1")


# ------------------------------------------------------------------ off-policy learners
class ConstantReward(gymnasium.Env):
    """Observation 1, reward 1 every step, never terminates: only the time limit ends an episode,
    so the true value of every state is ``1 / (1 - gamma)``."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action):
        return np.ones(1, np.float32), 1.0, False, False, {}


CONSTANT_REWARD_ID = "ConstantReward-v0"


@pytest.fixture
def constant_reward_env() -> str:
    """Id of :class:`ConstantReward` registered with a 10-step time limit (for ``env.id=...``)."""
    if CONSTANT_REWARD_ID not in gymnasium.registry:
        gymnasium.register(CONSTANT_REWARD_ID, entry_point=ConstantReward, max_episode_steps=10)
    return CONSTANT_REWARD_ID


def _box_spec(n_agents: int = 1, obs_dim: int = 3, act_dim: int = 1, low: float = -2.0, high: float = 2.0) -> EnvSpec:
    agents = tuple(f"agent_{i}" for i in range(n_agents))
    obs = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    act = gymnasium.spaces.Box(low, high, (act_dim,), np.float32)
    return EnvSpec(agents, (GroupSpec("agent", agents, obs, act),))


def _discrete_spec(n_agents: int = 1, obs_dim: int = 2, n_actions: int = 3, mask: bool = False) -> EnvSpec:
    agents = tuple(f"agent_{i}" for i in range(n_agents))
    obs = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    group = GroupSpec("agent", agents, obs, gymnasium.spaces.Discrete(n_actions), has_action_mask=mask)
    return EnvSpec(agents, (group,))


@pytest.fixture
def box_spec() -> Callable[..., EnvSpec]:
    """``box_spec(n_agents=1, obs_dim=3, act_dim=1, low=-2.0, high=2.0)``: one group ``agent`` of
    ``agent_0..`` with vector observations and ``Box(low, high, (act_dim,))`` actions."""
    return _box_spec


@pytest.fixture
def discrete_spec() -> Callable[..., EnvSpec]:
    """``discrete_spec(n_agents=1, obs_dim=2, n_actions=3, mask=False)``: one group ``agent`` with vector
    observations and ``Discrete(n_actions)`` actions (``mask``: the env supplies action masks)."""
    return _discrete_spec


def _learner_config(algo: str, *overrides: str) -> Config:
    return load_config(None, [f"algo.name={algo}", "norm.reward=false", "norm.obs=false", "model.hidden=[32, 32]",
                              "model.activation=relu", *overrides])


@pytest.fixture
def learner_config() -> Callable[..., Config]:
    """``learner_config(algo, *overrides)``: the embedded defaults for ``algo`` (dqn, sac, td3) with raw
    observations and rewards and ``[32, 32]`` ReLU networks; later overrides win."""
    return _learner_config


@pytest.fixture
def make_learner() -> Callable[..., tuple[nn.Module, Learner]]:
    """``make_learner(algo, spec, *overrides)`` -> ``(acting networks, learner)`` built as the off-policy
    trainer builds them (:func:`marl.off_policy.build_actor`, :func:`marl.off_policy.build_learner`:
    learner seed 1) from :func:`learner_config` ``(algo, *overrides)``."""
    from marl.off_policy import build_actor, build_learner  # imported by the tests that build learners only

    def make(algo: str, spec: EnvSpec, *overrides: str) -> tuple[nn.Module, Learner]:
        cfg = _learner_config(algo, *overrides)
        actor = build_actor(spec, cfg)
        return actor.net, build_learner(actor, cfg)

    return make


@pytest.fixture
def box_batch() -> Callable[..., OffPolicyBatch]:
    """``box_batch(n_rows=32, n_agents=1, obs_dim=3, act_dim=1, seed=0)``: random rows of a Box group
    (actions in ``[-1, 1]``, about 20% terminated, 90% alive, unit weights, discount 0.99)."""

    def batch(n_rows: int = 32, n_agents: int = 1, obs_dim: int = 3, act_dim: int = 1, seed: int = 0) -> OffPolicyBatch:
        g = torch.Generator().manual_seed(seed)
        return OffPolicyBatch(
            obs=torch.randn(n_rows, n_agents, obs_dim, generator=g),
            action=torch.rand(n_rows, n_agents, act_dim, generator=g) * 2 - 1,
            reward_n=torch.randn(n_rows, n_agents, generator=g),
            discount_n=torch.full((n_rows,), 0.99),
            next_obs_n=torch.randn(n_rows, n_agents, obs_dim, generator=g),
            terminated_n=torch.rand(n_rows, n_agents, generator=g) < 0.2,
            alive=torch.rand(n_rows, n_agents, generator=g) < 0.9,
            weights=torch.ones(n_rows),
        )

    return batch


@pytest.fixture
def contextual_bandit_batch() -> Callable[..., OffPolicyBatch]:
    """``contextual_bandit_batch(generator, n_rows=64)``: one-step episodes of a bandit with two one-hot
    states ``[B, 1, 2]`` and three actions drawn uniformly; reward 1 when action == state, else 0."""

    def batch(generator: torch.Generator, n_rows: int = 64) -> OffPolicyBatch:
        state = torch.randint(0, 2, (n_rows, 1), generator=generator)
        action = torch.randint(0, 3, (n_rows, 1), generator=generator)
        return OffPolicyBatch(torch.eye(2)[state], action, (action == state).float(), torch.full((n_rows,), 0.99),
                              torch.zeros(n_rows, 1, 2), torch.ones(n_rows, 1, dtype=torch.bool),
                              torch.ones(n_rows, 1, dtype=torch.bool), torch.ones(n_rows))

    return batch


@pytest.fixture
def continuous_bandit_batch() -> Callable[..., OffPolicyBatch]:
    """``continuous_bandit_batch(generator, n_rows=128)``: one-step episodes from a constant zero observation
    ``[B, 1, 1]`` with actions ``a`` uniform in ``[-1, 1]`` and reward ``-(2a - 0.5)^2``: with a ``Box(-2, 2)``
    action space (``2a`` in env units) the best env action is 0.5."""

    def batch(generator: torch.Generator, n_rows: int = 128) -> OffPolicyBatch:
        a = torch.rand(n_rows, 1, 1, generator=generator) * 2 - 1
        reward = -(2.0 * a - 0.5).square().squeeze(-1)
        return OffPolicyBatch(torch.zeros(n_rows, 1, 1), a, reward, torch.full((n_rows,), 0.99),
                              torch.zeros(n_rows, 1, 1), torch.ones(n_rows, 1, dtype=torch.bool),
                              torch.ones(n_rows, 1, dtype=torch.bool), torch.ones(n_rows))

    return batch


# ------------------------------------------------------------------ a two-node Ray cluster (runtime=ray tests)
@pytest.fixture(scope="session")
def ray_env_folder(tmp_path_factory) -> Path:
    """A folder on the import path of every process of the test Ray cluster (set before it starts): a test
    module writes there the env modules that its actors must import."""
    return tmp_path_factory.mktemp("ray_envs")


@contextlib.contextmanager
def _import_path(folder: Path) -> Iterator[None]:
    """``folder`` first on ``PYTHONPATH`` in the block: what the Ray processes started in it inherit."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *([old] if old else [])])
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="session")
def _ray_cluster(ray_env_folder: Path) -> Iterator[Any]:
    """``ray.cluster_utils.Cluster``: a head node and a second node, one CPU each, started once per session
    (two raylets take seconds to start); stopped after the last test that uses it (see :func:`cluster`)."""
    from ray.cluster_utils import Cluster

    with _import_path(ray_env_folder):
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
    yield c
    _stop_cluster(c)


def _stop_cluster(c: Any) -> None:
    """Disconnect this process and stop every node (idempotent)."""
    import ray

    ray.shutdown()
    if c.head_node is not None:
        c.shutdown()


@pytest.fixture(scope="module")
def _ray_driver(_ray_cluster: Any) -> Iterator[Any]:
    """This process connected to the session's cluster for one test module (disconnected after it, so that
    the modules in between start their own Ray instances as a user's run would)."""
    import ray

    ray.init(address=_ray_cluster.address)
    yield _ray_cluster
    ray.shutdown()


@pytest.fixture
def cluster(request: pytest.FixtureRequest, _ray_driver: Any, ray_env_folder: Path) -> Iterator[Any]:
    """The session's two-node Ray cluster, this process connected to it, both nodes alive: a node a previous
    test removed is added back first, and the test starts once Ray counts the removed one dead (until then its
    scheduler may place new actors on it, and they die before they run). After the last test of the session that
    uses it, the cluster stops."""
    import ray

    c = _ray_driver
    missing = 2 - len(c.list_all_nodes())
    if missing > 0:
        with _import_path(ray_env_folder):
            for _ in range(missing):
                c.add_node(num_cpus=1)
        c.wait_for_nodes()
    deadline = time.monotonic() + 120
    while sum(bool(n["Alive"]) for n in ray.nodes()) != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    yield c
    users = [item for item in request.session.items if "cluster" in getattr(item, "fixturenames", ())]
    if users and users[-1] is request.node:
        _stop_cluster(c)

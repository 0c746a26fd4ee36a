"""Fixtures shared by the test files: one torch thread, configs in a fresh run directory, tiny budgets."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from marl.config import Config, load_config

QUIET = ("log.tensorboard=false", "log.progress=false")


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

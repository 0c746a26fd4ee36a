"""The environment layer: PettingZoo / Gymnasium envs as arrays with an agent axis.

* :mod:`marl.env.adapters`: one env -> per-group arrays ``[A, ...]`` with ``alive`` masks.
* :mod:`marl.env.make`: env ids -> adapters (:func:`make_adapter`, :func:`probe_spec`).
* :mod:`marl.env.wrappers`: preprocessing (:class:`Preprocess`: frame stack, grayscale,
  resize, action repeat, padding).
* :mod:`marl.env.vector`: E copies as ``[E, A, ...]`` (in-process or worker processes).
* :mod:`marl.env.buffers`: the arrays of one step, written in place (shared memory for workers).
"""

from marl.env.adapters import (
    Adapter,
    AdapterStep,
    AECAdapter,
    GymAdapter,
    ParallelAdapter,
)
from marl.env.make import adapter_factory, make_adapter, probe_spec
from marl.env.vector import (
    EnvWorkerError,
    SubprocVectorEnv,
    SyncVectorEnv,
    VectorEnv,
    eval_seeds,
    make_vector_env,
    seeds_for,
)
from marl.env.wrappers import Preprocess

__all__ = [
    "AECAdapter",
    "Adapter",
    "AdapterStep",
    "EnvWorkerError",
    "GymAdapter",
    "ParallelAdapter",
    "Preprocess",
    "SubprocVectorEnv",
    "SyncVectorEnv",
    "VectorEnv",
    "adapter_factory",
    "eval_seeds",
    "make_adapter",
    "make_vector_env",
    "probe_spec",
    "seeds_for",
]

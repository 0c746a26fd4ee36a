"""marl: multi-agent reinforcement learning on PettingZoo and Gymnasium environments.

The Python API (``docs/api.md``)::

    import marl
    run = marl.train("configs/cartpole_ppo.yaml", seed=1, algo__lr=3e-4)   # -> marl.api.Run
    policy = marl.load(run.run_dir)                                        # -> marl.deploy.DeployedPolicy
    action = policy.act(observation)
    result = marl.evaluate(run.run_dir, episodes=10)

``train``, ``load``, ``evaluate``, ``compare`` and ``Run`` are imported on first use: ``import marl``
stays light, because env worker processes import ``marl.env`` (which needs no torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> "module:attribute"
_API = {
    "train": "marl.api:train_run",
    "load": "marl.api:load",
    "evaluate": "marl.api:evaluate",
    "compare": "marl.api:compare",
    "Run": "marl.api:Run",
    "DeployedPolicy": "marl.deploy:DeployedPolicy",
}

__all__ = ["DeployedPolicy", "Run", "__version__", "compare", "evaluate", "load", "train"]

if TYPE_CHECKING:
    from marl.api import Run as Run
    from marl.api import compare as compare
    from marl.api import evaluate as evaluate
    from marl.api import load as load
    from marl.api import train_run as train
    from marl.deploy import DeployedPolicy as DeployedPolicy


def __getattr__(name: str) -> Any:
    """Import the public API names of :data:`_API` on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'marl' has no attribute {name!r}")
    module, attr = _API[name].split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value

"""Env ids -> adapters.

An env id is one of:

* a Gymnasium registry id: ``"CartPole-v1"``, ``"Pendulum-v1"``, ``"LunarLander-v3"``;
* a PettingZoo registry id: ``"butterfly/pistonball_v6"``, ``"classic/connect_four_v3"``
  (the parallel API when the env has one);
* a module path whose module has ``parallel_env(**kwargs)`` (PettingZoo parallel) or
  ``env(**kwargs)`` (a PettingZoo AEC env or a Gymnasium env):
  ``"mpe2.simple_spread_v3"``, ``"pettingzoo.butterfly.pistonball_v6"``,
  ``"pettingzoo.classic.connect_four_v3"``, ``"envs.grid_nav"``;
* ``"lbforaging:<Gymnasium id>"`` / ``"rware:<Gymnasium id>"``: level-based foraging and the
  multi-robot warehouse, Gymnasium multi-agent envs seen as parallel envs
  (:mod:`marl.env.gym_multiagent`): ``"lbforaging:Foraging-8x8-2p-2f-coop-v3"``,
  ``"rware:rware-tiny-2ag-v2"``;
* ``"module:attr"`` where ``attr`` (a dotted qualname such as ``Outer.MyEnv`` is
  followed) is a callable returning a ``ParallelEnv``, an ``AECEnv`` or a ``gymnasium.Env``;
* ``"unimportable:module:qualname"``: a callable given to ``marl.train(env=...)`` that no
  other process can import (defined in ``__main__``, a notebook or a function). It is held
  in this process by :func:`register_env_callable`; vector envs get the callable itself
  (pickled by value with cloudpickle for worker processes). Another process must be given
  the callable again.

:func:`adapter_factory` is the picklable factory the vector envs take; :func:`env_factory`,
:func:`env_spec` and :func:`vector_env` build the same from a config.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import os
import pkgutil
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
import pettingzoo
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.env_registry.exceptions import FailedToImport

from marl.config import DEFAULT_CONFIG, Config, ConfigError, EnvConfig, read_yaml
from marl.env import gym_multiagent
from marl.env.adapters import Adapter, AECAdapter, GymAdapter, ParallelAdapter
from marl.env.batched import BatchedVectorEnv, batched_factory
from marl.env.vector import VectorEnv, make_vector_env
from marl.env.wrappers import Preprocess, apply_preprocess
from marl.multi_agent.groups import ONE_GROUP
from marl.schemas import reads_env_state
from marl.types import EnvSpec

__all__ = [
    "UNIMPORTABLE",
    "EnvCallable",
    "adapt",
    "adapter_factory",
    "callable_env_id",
    "close_env_ids",
    "env_factory",
    "env_spec",
    "known_env_ids",
    "make_adapter",
    "make_raw_env",
    "preprocess_of",
    "probe_spec",
    "register_env_callable",
    "vector_env",
]

# Packages scanned (without importing their modules) for env-id suggestions.
_ENV_PACKAGES = ("mpe2", "pettingzoo.butterfly", "pettingzoo.sisl", "pettingzoo.classic", "envs")
# pip commands for packages that hold envs but are optional dependencies.
_INSTALL = {
    "mpe2": "pip install mpe2",
    "pettingzoo.butterfly": "pip install 'pettingzoo[butterfly]'",
    "pettingzoo.sisl": "pip install 'pettingzoo[sisl]'",
    "pettingzoo.classic": "pip install 'pettingzoo[classic]'",
    "pettingzoo.atari": "pip install 'pettingzoo[atari]'",
    "pettingzoo": "pip install pettingzoo",
}
_ID_HELP = (
    "Env ids are a Gymnasium registry id ('CartPole-v1'), a PettingZoo registry id "
    "('butterfly/pistonball_v6'), a module path whose module has parallel_env() or "
    "env() ('mpe2.simple_spread_v3', 'pettingzoo.classic.connect_four_v3', 'envs.grid_nav'), "
    "'lbforaging:<id>' / 'rware:<id>' ('lbforaging:Foraging-8x8-2p-2f-coop-v3', 'rware:rware-tiny-2ag-v2'), or "
    "'module:callable' returning a ParallelEnv, AECEnv or gymnasium.Env."
)


@functools.cache
def known_env_ids() -> tuple[str, ...]:
    """Gymnasium registry ids plus the env modules of the PettingZoo / mpe2 / ``envs`` packages, and
    the ``lbforaging:`` / ``rware:`` ids when those packages are installed.

    Modules are listed with ``pkgutil`` from their package folders, without importing them.
    """
    family = [i for prefix in gym_multiagent.FAMILIES for i in gym_multiagent.family_ids(prefix)]
    bare = {i.split(":", 1)[1] for i in family}
    ids = [i for i in gymnasium.registry if i not in bare] + family
    ids += sorted(set(pettingzoo.aec_registry) | set(pettingzoo.parallel_registry))
    for package in _ENV_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except ImportError:
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        for module in pkgutil.iter_modules(spec.submodule_search_locations):
            versioned = re.search(r"_v\d+$", module.name) is not None
            if not module.name.startswith("_") and (versioned or package == "envs") and not module.ispkg:
                ids.append(f"{package}.{module.name}")
    return tuple(ids)


def close_env_ids(env_id: str, n: int = 5) -> list[str]:
    """Known env ids closest to ``env_id`` (whole ids, and module names without their package)."""
    ids = known_env_ids()
    by_name: dict[str, list[str]] = {}
    for full in ids:
        if "." in full and "/" not in full and full not in gymnasium.registry:
            by_name.setdefault(full.rsplit(".", 1)[1], []).append(full)
    hits = difflib.get_close_matches(env_id, ids, n, 0.6)
    for name in difflib.get_close_matches(env_id.rsplit(".", 1)[-1], list(by_name), n, 0.6):
        hits += by_name[name]
    return list(dict.fromkeys(hits))[:n]


def _unknown(env_id: str) -> ValueError:
    matches = close_env_ids(env_id)
    hint = f" Did you mean: {', '.join(matches)}?" if matches else ""
    return ValueError(f"unknown env id {env_id!r}.{hint} {_ID_HELP}")


def _install_hint(module_name: str) -> str | None:
    for package in sorted(_INSTALL, key=len, reverse=True):
        if module_name == package or module_name.startswith(package + "."):
            return _INSTALL[package]
    return None


def _import(env_id: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            # The path itself does not exist: a typo, or an optional package not installed.
            root_missing = importlib.util.find_spec(missing.split(".")[0]) is None
            hint = _install_hint(module_name)
            if hint and root_missing:
                raise ImportError(
                    f"env {env_id!r} needs the package {missing!r}, which is not installed: {hint}"
                ) from err
            if ":" in env_id:  # a module:callable id: the module itself is not importable from here
                raise ValueError(
                    f"env id {env_id!r}: cannot import module {module_name!r} ({err}); put its folder on the "
                    "import path (run from the folder that holds it, or PYTHONPATH=...) or install its package"
                ) from None
            raise _unknown(env_id) from None
        hint = _install_hint(module_name) or f"pip install {missing.split('.')[0]}"
        in_extra = module_name.startswith(("mpe2", "pettingzoo.butterfly", "pettingzoo.sisl", "pettingzoo.classic"))
        raise ImportError(
            f"env {env_id!r} needs the module {missing!r}, which is not installed: {hint}"
            + (" (or pip install 'marl[envs]' for every env package marl tests)" if in_extra else "")
        ) from err


RENDER_FOR_OBSERVATIONS: tuple[str, ...] = (
    "pettingzoo.butterfly.pistonball", "butterfly/pistonball",
    "pettingzoo.butterfly.cooperative_pong", "butterfly/cooperative_pong",
)
"""Env ids (prefixes) whose observations come from a screen they only draw with a render mode set:
PettingZoo's pistonball and cooperative_pong skip drawing when ``render_mode`` is ``None``, so every
observation would be the first frame (pettingzoo 1.24-1.27). Other such envs are caught by
:func:`frozen_image_groups`."""


def frozen_image_groups(factory: Callable[[], Adapter], steps: int = 8, seed: int = 0) -> list[str]:
    """Groups with image observations that did not change over ``steps`` random steps from a reset.

    A screen-cut observation that never changes means the env draws only with a render mode set
    (as pistonball does): training on it learns nothing, silently. Vector observations are not
    judged (a board can legitimately stay the same for a few moves).
    """
    adapter = factory()
    try:
        images = [g for g in adapter.spec.groups if g.obs_space.dtype == np.uint8 and len(g.obs_space.shape) == 3]
        if not images:
            return []
        obs, _ = adapter.reset(seed)
        first = {g.name: obs[g.name].obs.copy() for g in images}
        changed = dict.fromkeys(first, False)
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            actions = {}
            for g in adapter.spec.groups:
                if g.discrete:
                    n = int(g.action_space.n)
                    mask = obs[g.name].action_mask
                    allowed = np.ones((g.n_agents, n), bool) if mask is None else mask | ~mask.any(-1, keepdims=True)
                    actions[g.name] = (rng.random((g.n_agents, n)) * allowed).argmax(-1)
                else:
                    low, high = g.action_space.low, g.action_space.high
                    actions[g.name] = rng.uniform(low, high, (g.n_agents, *low.shape)).astype(np.float32)
            step = adapter.step(actions)
            obs = step.obs
            for name in first:
                changed[name] |= not np.array_equal(obs[name].obs, first[name])
        return [name for name, moved in changed.items() if not moved]
    finally:
        adapter.close()


# --------------------------------------------------------------------------- envs given as callables
UNIMPORTABLE = "unimportable:"
"""Prefix of the env id of a callable that other processes cannot import (see :func:`callable_env_id`)."""

_CALLABLES: dict[str, Callable[..., Any]] = {}
# env id -> the callable given in this process for an "unimportable:" id. A process-wide table because
# the trainers, evaluation and ``marl record`` rebuild the env from ``cfg.env.id`` alone.


class EnvCallable:
    """A user's env callable that pickles by value (cloudpickle), so worker processes can call it.

    Plain pickle stores functions and classes by reference (``module.qualname``), which fails for
    ones defined in ``__main__``, a notebook or a function body.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, **kwargs: Any) -> Any:
        return self.fn(**kwargs)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        import cloudpickle

        return _unpickle_callable, (cloudpickle.dumps(self.fn),)

    def __repr__(self) -> str:
        return f"EnvCallable({self.fn!r})"


def _unpickle_callable(data: bytes) -> EnvCallable:
    import cloudpickle

    return EnvCallable(cloudpickle.loads(data))


def _resolves_to(module_name: str, qualname: str, fn: Any) -> bool:
    """Whether importing ``module_name`` and following ``qualname`` gives ``fn`` itself."""
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:  # noqa: BLE001 - any failure to import means "not importable"
        return False
    return obj is fn


def callable_env_id(fn: Callable[..., Any]) -> tuple[str, bool]:
    """The env id recording ``fn`` in a config, and whether another process can import it.

    ``"module:qualname"`` when importing ``module`` and following ``qualname`` gives ``fn`` back, or
    ``"module:attr"`` for a module attribute that holds it (a function made by a factory); else
    ``"unimportable:module:qualname"`` (``__main__``, notebooks, classes defined in a function,
    lambdas, ``functools.partial`` objects).
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module and qualname and module != "__main__" and "<" not in qualname and _resolves_to(module, qualname, fn):
        return f"{module}:{qualname}", True
    # Made by a factory (PettingZoo's ``parallel_env`` is ``parallel_wrapper_fn.<locals>.par_fn``): the
    # module attribute that holds it, shortest module name first (``mpe2.simple_spread_v3:parallel_env``).
    for name, mod in sorted(sys.modules.copy().items(), key=lambda item: (len(item[0]), item[0])):
        if name.startswith("__") or mod is sys.modules.get("__main__") or not hasattr(mod, "__dict__"):
            continue  # __main__ and its aliases (multiprocessing's __mp_main__) are not importable elsewhere
        attr = next((k for k, v in list(vars(mod).items()) if v is fn and not k.startswith("_")), None)
        if attr is not None and _resolves_to(name, attr, fn):
            return f"{name}:{attr}", True
    name = qualname or type(fn).__name__
    return f"{UNIMPORTABLE}{module or type(fn).__module__}:{name}", False


def register_env_callable(fn: Callable[..., Any]) -> str:
    """Make ``fn`` buildable from its env id in this process; return the id (:func:`callable_env_id`)."""
    if not callable(fn):
        raise TypeError(f"env must be an env id or a callable returning a PettingZoo or Gymnasium env, got {fn!r}")
    env_id, importable = callable_env_id(fn)
    if not importable:
        _CALLABLES[env_id] = fn
    return env_id


def _unregistered(env_id: str) -> ValueError:
    return ValueError(
        f"env id {env_id!r} is a callable given to marl.train(env=...) that other processes cannot import "
        "(defined in __main__, a notebook or a function); pass it again (marl.load(run, env=...), "
        "marl.evaluate(run, env=...), marl.train(resume=run, env=...)) or move it into an importable module"
    )


def make_raw_env(
    env_id: str | Callable[..., Any], env_kwargs: Mapping[str, Any] | None = None, render_mode: str | None = None
) -> Any:
    """The env named by ``env_id`` (see the module docstring), or made by the callable ``env_id``,
    before preprocessing and adapters.

    Envs in :data:`RENDER_FOR_OBSERVATIONS` draw their observations only when a
    render mode is set; they get ``render_mode="rgb_array"`` unless one is given.
    """
    kwargs = dict(env_kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if callable(env_id):
        return env_id(**kwargs)
    if env_id in _CALLABLES:
        return _CALLABLES[env_id](**kwargs)
    if env_id.startswith(UNIMPORTABLE):
        raise _unregistered(env_id)
    multi_agent_gym = gym_multiagent.make(env_id, kwargs)  # lbforaging:..., rware:...
    if multi_agent_gym is not None:
        return multi_agent_gym
    if render_mode is None and "render_mode" not in kwargs and env_id.startswith(RENDER_FOR_OBSERVATIONS):
        kwargs["render_mode"] = "rgb_array"
    if env_id.startswith("ALE/") and env_id not in gymnasium.registry:
        try:
            import ale_py  # noqa: F401 - registers the ALE/ ids with Gymnasium
        except ImportError as err:
            raise ImportError(f"env {env_id!r} is an Atari game: it needs the package ale-py (pip install ale-py), "
                              "which registers the ALE/ ids with Gymnasium") from err
    if env_id in gymnasium.registry:
        try:
            return gymnasium.make(env_id, **kwargs)
        except gymnasium.error.DependencyNotInstalled as err:
            raise ImportError(f"env {env_id!r} needs an optional package: {err}") from err
        except ModuleNotFoundError as err:
            name = (err.name or "").split(".")[0]
            hint = "pip install 'gymnasium[jax]'" if name in ("jax", "jaxlib") else f"pip install {name}"
            raise ImportError(f"env {env_id!r} needs the package {name!r}, which is not installed: {hint}") from err
    registry_id = re.sub(r"_v(\d+)$", r"-v\1", env_id)  # PettingZoo stores "pistonball-v6"
    for api, registry in (("parallel", pettingzoo.parallel_registry), ("aec", pettingzoo.aec_registry)):
        if "/" in env_id and registry_id in registry:
            try:
                return pettingzoo.make(api, registry_id, **kwargs)
            except FailedToImport as err:
                raise ImportError(f"env {env_id!r} needs an optional package: {err}") from err
    if ":" in env_id:
        module_name, attr = env_id.split(":", 1)
        maker: Any = _import(env_id, module_name)
        for part in attr.split("."):
            maker = getattr(maker, part, None)
        if not callable(maker):
            raise ValueError(
                f"env id {env_id!r}: module {module_name!r} has no callable {attr!r}. {_ID_HELP}"
            )
        return maker(**kwargs)
    if not re.fullmatch(r"[A-Za-z_][\w.]*", env_id):
        raise _unknown(env_id)
    module = _import(env_id, env_id)
    for maker_name in ("parallel_env", "env"):
        maker = getattr(module, maker_name, None)
        if callable(maker):
            return maker(**kwargs)
    raise ValueError(
        f"module {env_id!r} has neither parallel_env() nor env(), so it is not an env id. {_ID_HELP}"
    )


def adapt(env: Any, groups: Mapping[str, Sequence[str]] | None = None, use_state: bool = True) -> Adapter:
    """The adapter matching the env's API (parallel, AEC or Gymnasium)."""
    if isinstance(env, ParallelEnv):
        return ParallelAdapter(env, groups, use_state)
    if isinstance(env, AECEnv):
        return AECAdapter(env, groups, use_state)
    if isinstance(env, gymnasium.Env):
        if groups is not None:
            raise ValueError("a Gymnasium env has one agent in one group 'agent'; pass groups=None")
        return GymAdapter(env)
    raise TypeError(
        f"expected a PettingZoo ParallelEnv / AECEnv or a gymnasium.Env, got {type(env).__name__}"
    )


def make_adapter(
    env_id: str | Callable[..., Any],
    env_kwargs: Mapping[str, Any] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    render_mode: str | None = None,
    preprocess: Preprocess | None = None,
    use_state: bool = True,
) -> Adapter:
    """Build one env and its adapter.

    Args:
        env_id: see the module docstring; or a callable returning the env.
        env_kwargs: keyword arguments of the env constructor.
        groups: group name -> agent names; ``None`` groups by name prefix.
        render_mode: passed to the env (``"rgb_array"`` for videos), or ``None``.
        preprocess: frame stack / grayscale / resize / action repeat / pad (default: none).
        use_state: read the env's global ``state()`` when it has one.

    Raises:
        ValueError: unknown id (the message lists close matches).
        ImportError: the env needs an optional package (the message names the pip command).
    """
    env = make_raw_env(env_id, env_kwargs, render_mode)
    try:
        return adapt(apply_preprocess(env, preprocess or Preprocess()), groups, use_state)
    except Exception:
        env.close()
        raise


def adapter_factory(
    env_id: str | Callable[..., Any],
    env_kwargs: Mapping[str, Any] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    render_mode: str | None = None,
    preprocess: Preprocess | None = None,
    use_state: bool = True,
) -> Callable[[], Adapter]:
    """A picklable zero-argument factory of :func:`make_adapter` (what the vector envs take)."""
    return functools.partial(
        make_adapter,
        env_id,
        dict(env_kwargs or {}),
        groups if groups is None or isinstance(groups, str) else {g: list(a) for g, a in groups.items()},
        render_mode,
        preprocess,
        use_state,
    )


def probe_spec(factory: Callable[[], Adapter]) -> EnvSpec:
    """The :class:`EnvSpec` of the adapters a factory makes (builds one, reads its spec, closes it)."""
    adapter = factory()
    try:
        return adapter.spec
    finally:
        adapter.close()


# --------------------------------------------------------------------------- from a config
def preprocess_of(env: EnvConfig) -> Preprocess:
    """The preprocessing of an ``env`` config section."""
    return Preprocess(
        frame_stack=env.frame_stack, grayscale=env.grayscale, resize=tuple(env.resize) or None,
        action_repeat=env.action_repeat, pad=env.pad,
    )


def env_factory(cfg: Config, render_mode: str | None = None) -> Callable[[], Adapter]:
    """The picklable adapter factory of a config: its env id, kwargs, groups and preprocessing.

    The env's global ``state()`` is read only when :func:`marl.schemas.reads_env_state` (a central
    critic, or QMIX on the env state: it can be costly, pistonball renders the screen for it). An
    ``unimportable:`` id registered in this process passes its callable by value
    (:class:`EnvCallable`), so worker processes can build it.
    """
    env: str | EnvCallable = cfg.env.id
    if env in _CALLABLES:
        env = EnvCallable(_CALLABLES[env])
    return adapter_factory(env, cfg.env.kwargs, groups_of(cfg.env), render_mode,
                           preprocess_of(cfg.env), use_state=reads_env_state(cfg))


def groups_of(env: EnvConfig) -> dict[str, list[str]] | str | None:
    """The ``groups`` argument of the adapters for an ``env`` config section (see
    :func:`marl.multi_agent.groups.resolve_groups`)."""
    return ONE_GROUP if env.single_group else (dict(env.groups) or None)


def env_spec(cfg: Config) -> EnvSpec:
    """Build one env of the config in-process and return its spec; a bad id, kwargs or groups is a
    :class:`~marl.config.ConfigError` naming the key.

    Trainers call it before any worker process starts, so a typo in ``env.id`` or an impossible
    grouping is reported in one line, not as a worker traceback.
    """
    try:
        if cfg.env.backend == "batched":
            check_batched(cfg)
            return batched_vector_env(cfg, 1).spec
        if cfg.env.id.startswith("vmas:"):
            raise ConfigError(f"env.id={cfg.env.id!r}: VMAS envs are batched simulations; set env.backend=batched")
        return probe_spec(env_factory(cfg))
    except ImportError as exc:
        raise ConfigError(f"env.id={cfg.env.id!r}: {exc}") from exc
    except ConfigError:
        raise  # already one line naming its key
    except (ValueError, TypeError, KeyError) as exc:
        key = "env.groups" if "group" in str(exc) else ("env.kwargs" if isinstance(exc, TypeError) else "env.id")
        raise ConfigError(f"{key}: cannot build env {cfg.env.id!r} with kwargs {dict(cfg.env.kwargs)}: {exc}"
                          + _default_kwargs_hint(cfg)) from exc


def warn_if_default_horizon(cfg: Config) -> bool:
    """Warn when another env trains with the embedded default's PPO horizon settings (``gamma`` 0.95 and time
    limits treated as terminal: right for the MPE tasks, defined by their 25 steps, wrong for most time-limited
    envs), e.g. when only ``env.id`` was changed from ``marl train``'s default. Returns whether it warned."""
    default = read_yaml(DEFAULT_CONFIG)
    algo = default.get("algo", {})
    if (cfg.env.id.startswith("mpe2.") or cfg.algo.name != algo.get("name")
            or cfg.algo.gamma != algo.get("gamma")
            or cfg.algo.bootstrap_on_truncation != algo.get("bootstrap_on_truncation")):
        return False
    warnings.warn(f"{cfg.env.id} trains with the embedded default's algo.gamma={cfg.algo.gamma} and "
                  "algo.bootstrap_on_truncation=false, tuned for simple_spread's 25-step episodes (the time limit "
                  "ends the task); for an env whose time limit only cuts episodes set algo.gamma=0.99 "
                  "algo.bootstrap_on_truncation=true, or start from a config in configs/ (docs/envs.md)",
                  stacklevel=2)
    return True


def _default_kwargs_hint(cfg: Config) -> str:
    """The fix when ``env.id`` was changed but ``env.kwargs`` are still the embedded default's (simple_spread's)."""
    default = read_yaml(DEFAULT_CONFIG).get("env", {})
    if cfg.env.id != default.get("id") and dict(cfg.env.kwargs) == dict(default.get("kwargs") or {}):
        return (f". env.kwargs are the embedded default's (for {default.get('id')}), kept when only env.id changes: "
                "add env.kwargs={} (or the new env's own keywords)")
    return ""


def check_batched(cfg: Config) -> None:
    """Refuse what the batched backend cannot do, naming the key (before anything is built)."""
    e = cfg.env
    unsupported = [k for k, on in (("env.groups", bool(e.groups)), ("env.single_group", e.single_group),
                                   ("env.frame_stack", e.frame_stack > 1),
                                   ("env.grayscale", e.grayscale), ("env.resize", bool(e.resize)),
                                   ("env.action_repeat", e.action_repeat > 1), ("env.pad", e.pad)) if on]
    if unsupported:
        raise ConfigError(f"{unsupported[0]}: not supported with env.backend=batched (the batched simulation "
                          "groups agents by name prefix and has no preprocessing); use env.backend=sync or subprocess")


def batched_vector_env(cfg: Config, num_envs: int, device: str | None = None) -> BatchedVectorEnv:
    """``num_envs`` copies of the config's env as one batched simulation (:mod:`marl.env.batched`); with a
    ``device``, torch tensors on it end to end (VMAS only; see :func:`marl.env.batched.torch_native`)."""
    factory = batched_factory(cfg.env.id, cfg.env.kwargs, tensors=device is not None, device=device or "cpu")
    return BatchedVectorEnv(factory(num_envs), use_state=reads_env_state(cfg))


def eval_backend(cfg: Config) -> str:
    """The backend evaluation runs on: in-process (``sync``), or ``batched`` for a batched run."""
    return "batched" if cfg.env.backend == "batched" else "sync"


def vector_env(cfg: Config, num_envs: int, backend: str | None = None) -> VectorEnv:
    """``num_envs`` copies of the config's env on ``backend`` (default ``cfg.env.backend``).

    The subprocess backend runs ``env.num_workers`` processes (0 = one per core, at
    most ``num_envs``); with ``env.overlap`` the collector acts on one worker's env
    copies while the others step.
    """
    if backend is None and cfg.runtime == "ray":  # training copies on Ray workers (evaluation passes its backend)
        return ray_vector_env(cfg, num_envs)
    backend = backend or cfg.env.backend
    if backend == "batched":
        return batched_vector_env(cfg, num_envs)
    workers = None
    if backend == "subprocess":
        workers = min(cfg.env.num_workers or (os.cpu_count() or 1), num_envs)
    return make_vector_env(env_factory(cfg), num_envs, backend=backend, num_workers=workers)


def ray_vector_env(cfg: Config, num_envs: int) -> VectorEnv:
    """``num_envs`` copies of the config's env on ``ray.num_workers`` Ray actors (:mod:`marl.env.ray_env`),
    connected as ``ray.address`` says (:mod:`marl.ray_runtime`); closing the env closes the connection."""
    from marl.env.ray_env import RayVectorEnv
    from marl.ray_runtime import RayConnection

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("runtime=ray: not supported under torchrun (each rank would start its own workers); "
                          "run marl train without torchrun, or use runtime=local")
    r = cfg.ray
    workers = r.num_workers or num_envs // r.envs_per_worker
    connection = RayConnection(r.address, r.connect_timeout_s, workers * r.cpus_per_worker)
    try:
        return RayVectorEnv(env_factory(cfg), num_envs, workers, connection=connection,
                            cpus_per_worker=r.cpus_per_worker, max_restarts=r.max_restarts,
                            start_timeout_s=r.start_timeout_s)
    except BaseException:
        connection.close()
        raise


LARGE_IMAGE_PIXELS = 128 * 128
"""Image observations with more pixels per frame than this (after ``env.resize``) get a warning: a screen-sized
frame (cooperative_pong: 280x480x3) makes every rollout gigabytes large and every CNN pass slow."""


def warn_if_large_images(cfg: Config, spec: EnvSpec) -> list[str]:
    """Warn (and return the groups) when image observations are larger than :data:`LARGE_IMAGE_PIXELS` pixels."""
    large = [g for g in spec.groups
             if len(g.obs_space.shape) == 3 and g.obs_space.shape[0] * g.obs_space.shape[1] > LARGE_IMAGE_PIXELS]
    for g in large:
        size = "x".join(map(str, g.obs_space.shape))
        held = ""
        if cfg.algo.name == "ppo":  # a rollout holds num_envs x num_steps observations per agent
            gib = cfg.env.num_envs * cfg.algo.num_steps * g.n_agents * np.prod(g.obs_space.shape) / 2**30
            held = f" (one rollout holds {gib:.1f} GiB of them)"
        warnings.warn(f"group {g.name!r} observes {size} images{held}: training on full frames is slow and "
                      "memory-hungry; set env.resize: [84, 84] (and env.grayscale: true)", stacklevel=2)
    return [g.name for g in large]


def warn_if_frozen(cfg: Config) -> list[str]:
    """Warn (and return the groups) when a config's image observations stay frozen (:func:`frozen_image_groups`);
    also warn about screen-sized images (:func:`warn_if_large_images`)."""
    if cfg.env.backend == "batched":
        return []
    warn_if_large_images(cfg, probe_spec(env_factory(cfg)))
    frozen = frozen_image_groups(env_factory(cfg))
    if frozen:
        warnings.warn(f"the image observations of groups {frozen} did not change over 8 random steps: the env may "
                      "draw its observations only when a render mode is set; try env.kwargs.render_mode=rgb_array",
                      stacklevel=2)
    return frozen

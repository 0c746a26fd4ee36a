"""Env wrappers: preprocessing applied to a raw env before its adapter (frame stacking,
grayscale, resize, action repeat, padding; SuperSuit where its wrapper is correct, our own
otherwise), and :class:`GymAsParallel`, a Gymnasium env as a one-agent parallel env.

Order of application (innermost first): action repeat, grayscale, resize, pad, frame stack.
Action repeat wraps the raw env so the image transforms run once per agent decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium
import supersuit
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import BaseParallelWrapper

__all__ = [
    "GymActionRepeat",
    "GymAsParallel",
    "ParallelActionRepeat",
    "Preprocess",
    "apply_preprocess",
    "stacked_shape",
]


@dataclass(frozen=True)
class Preprocess:
    """Observation / action preprocessing; every option defaults to off.

    Attributes:
        frame_stack: number of consecutive observations ``k`` stacked into one
            (1 = off). Stacked on the last axis: images ``[H, W, C]`` become
            ``[H, W, C*k]`` (grayscale ``[H, W]`` becomes ``[H, W, k]``), vectors
            ``[d]`` become ``[d*k]``; oldest first. After a reset the stack is
            filled with copies of the first observation (SuperSuit ``frame_stack_v2``).
        grayscale: convert RGB images ``[H, W, 3]`` to luminance ``[H, W, 1]``
            (ITU-R 601 weights, uint8 kept).
        resize: ``(H, W)`` target image size in pixels (bilinear), or ``None``.
        action_repeat: each agent decision is applied this many env steps
            (1 = off); rewards are summed over the repeated steps and the repeat
            stops early when an episode (or, for parallel envs, an agent's episode)
            ends inside it, keeping terminated and truncated apart. Not defined for
            turn-based (AEC) games.
        pad: pad every agent's observation and action space to a common one
            (SuperSuit ``pad_observations_v0`` + ``pad_action_space_v0``), so unlike
            agents can share one network. Multi-agent envs only.
    """

    frame_stack: int = 1
    grayscale: bool = False
    resize: tuple[int, int] | None = None
    action_repeat: int = 1
    pad: bool = False

    def __post_init__(self) -> None:
        if self.frame_stack < 1 or self.action_repeat < 1:
            raise ValueError(
                f"frame_stack and action_repeat must be >= 1 (1 = off); got frame_stack={self.frame_stack}, "
                f"action_repeat={self.action_repeat}"
            )
        if self.resize is not None:
            size = tuple(int(x) for x in self.resize)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"resize must be [H, W] with positive sizes in pixels, got {self.resize}")
            object.__setattr__(self, "resize", size)

    @property
    def enabled(self) -> bool:
        """Whether any option is on."""
        return self != Preprocess()


class ParallelActionRepeat(BaseParallelWrapper):
    """Repeat each joint action ``repeat`` times on a PettingZoo parallel env.

    Rewards are summed per agent. An agent whose episode ends inside the repeat
    stops acting; its flags, final observation and info are those of the step at
    which it ended. The repeat stops when no agent is left or when an agent
    appears that has no action.
    """

    def __init__(self, env: ParallelEnv, repeat: int):
        super().__init__(env)
        self.repeat = repeat

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        acting = dict(actions)
        obs: dict[str, Any] = {}
        rewards: dict[str, float] = {}
        terms: dict[str, bool] = {}
        truncs: dict[str, bool] = {}
        infos: dict[str, Any] = {}
        for _ in range(self.repeat):
            o, r, te, tr, inf = self.env.step(acting)
            obs.update(o)
            terms.update(te)
            truncs.update(tr)
            infos.update(inf)
            for agent, value in r.items():
                rewards[agent] = rewards.get(agent, 0.0) + value
            live = self.env.agents
            acting = {a: acting[a] for a in live if a in acting}
            if not live or len(acting) != len(live):
                break
        return obs, rewards, terms, truncs, infos


class GymActionRepeat(gymnasium.Wrapper):
    """Repeat each action ``repeat`` times; rewards summed, stop at termination or truncation."""

    def __init__(self, env: gymnasium.Env, repeat: int):
        super().__init__(env)
        self.repeat = repeat

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class GymAsParallel(ParallelEnv):
    """A Gymnasium env seen as a one-agent PettingZoo parallel env (agent ``agent_0``)."""

    def __init__(self, env: gymnasium.Env):
        self.env, self.metadata = env, getattr(env, "metadata", {}) or {}
        self.possible_agents: list[str] = ["agent_0"]
        self.agents: list[str] = []

    def observation_space(self, agent: str) -> spaces.Space:
        return self.env.observation_space

    def action_space(self, agent: str) -> spaces.Space:
        return self.env.action_space

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.agents = ["agent_0"]
        return {"agent_0": obs}, {"agent_0": info}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        obs, reward, term, trunc, info = self.env.step(actions["agent_0"])
        if term or trunc:
            self.agents = []
        return {"agent_0": obs}, {"agent_0": reward}, {"agent_0": term}, {"agent_0": trunc}, {"agent_0": info}

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def _add_channel_axis(env: Any) -> Any:
    """``[H, W]`` observations -> ``[H, W, 1]``."""

    def space_fn(space: spaces.Box, *_: Any) -> spaces.Box:
        return spaces.Box(space.low[..., None], space.high[..., None], dtype=space.dtype)

    return supersuit.observation_lambda_v0(env, lambda obs, *_: obs[..., None], space_fn)


def apply_preprocess(env: Any, preprocess: Preprocess) -> Any:
    """Wrap a raw PettingZoo (parallel or AEC) or Gymnasium env with ``preprocess``."""
    p = preprocess
    if not p.enabled:
        return env
    if p.action_repeat > 1:
        if isinstance(env, ParallelEnv):
            env = ParallelActionRepeat(env, p.action_repeat)
        elif isinstance(env, gymnasium.Env):
            env = GymActionRepeat(env, p.action_repeat)
        else:
            raise ValueError("action_repeat is not defined for turn-based (AEC) games; set action_repeat=1")
    if p.grayscale:
        env = supersuit.color_reduction_v0(env, mode="full")
    if p.resize is not None:
        height, width = p.resize
        env = supersuit.resize_v1(env, x_size=width, y_size=height)
    if p.pad:
        if not isinstance(env, (ParallelEnv, AECEnv)):
            raise ValueError("pad=True pads unlike agents of a PettingZoo env; a Gymnasium env has one agent")
        env = supersuit.pad_action_space_v0(supersuit.pad_observations_v0(env))
    if p.frame_stack > 1:
        env = supersuit.frame_stack_v2(env, stack_size=p.frame_stack, stack_dim=-1)
    elif p.grayscale:
        env = _add_channel_axis(env)
    return env


def stacked_shape(shape: tuple[int, ...], k: int) -> tuple[int, ...]:
    """Shape of ``k`` stacked observations of ``shape`` (see :class:`Preprocess`)."""
    if len(shape) == 1:
        return (shape[0] * k,)
    if len(shape) == 2:
        return (*shape, k)
    return (*shape[:-1], shape[-1] * k)

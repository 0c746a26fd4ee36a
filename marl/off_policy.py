"""Off-policy training (DQN, SAC, TD3): act -> replay -> sample -> update -> priorities -> log.

Glossary (as in :mod:`marl.trainer`, plus):

* **row**: one env step of one env copy for one group (all its agents, ``[A, ...]``);
  each group has its own replay buffer of ``algo.buffer_size`` rows.
* **training phase**: the gradient steps run after every ``algo.train_freq`` env
  steps collected (``algo.gradient_steps`` of them); the off-policy ``iteration``
  counter counts training phases and ``log.interval`` is measured in them.
* **warm-up**: the first ``algo.learning_starts`` env steps act uniformly at random
  (allowed actions only); training starts once each replay holds
  ``max(learning_starts, batch_size)`` rows.

One vector step of the loop, data flowing one way::

    out = actor.act(obs, epsilon=...)               # normalizer stats update here
    step = env.step(out.env_action)
    replay[g].add(rows(obs, out.action, step))      # next_obs = final obs where an episode ended
    every train_freq env steps, gradient_steps times:
        s = replay[g].sample(B, rng, beta)          # per group
        out = learner.update(batch(s))              # observations normalized with frozen stats
        replay[g].update_priorities(s.indices, out.td_error[g])   # PER: the one edge back

The replay stores raw observations; they are normalized with the current statistics
when sampled (and goals relabelled by HER before that). Rewards are stored raw:
``norm.reward`` must be off. A checkpoint holds the acting networks and normalizers
(``policy``: what :func:`build_actor` loads, so ``marl eval`` works unchanged), the
learner (critics, targets, optimizers, ``log_alpha``, its generator), counters, every
RNG state (python, numpy, torch, the replay sampling generator, the actor's
generator) and, with ``algo.save_replay``, the replay buffers in ``latest.pt``
(their size: ``replay/bytes_per_row`` (logged at start) times the rows stored). A
resumed run continues from all of that; its env copies start new episodes (env
internals are not saved), so the newest stored row of each lane is marked
truncated, and without a saved replay it refills ``learning_starts`` rows first.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from marl import checkpoint as ckpt
from marl.algos.dqn import DQNLearner, QPolicyNet, linear_epsilon
from marl.algos.sac import SACLearner, SACPolicyNet
from marl.algos.targets import OffPolicyBatch
from marl.algos.td3 import TD3Learner, TD3PolicyNet
from marl.config import Config, DQNConfig, NormConfig, OffPolicyConfig, SACConfig, TD3Config, dump_yaml, to_dict
from marl.data import (
    HerReplayBuffer,
    PrioritizedReplayBuffer,
    PrioritizedSampler,
    ReplayBuffer,
    ReplaySample,
    per_beta_at,
    replay_schema,
)
from marl.env.make import make_raw_env
from marl.logger import Logger, episode_metrics, flatten_dict, flatten_eval
from marl.multi_agent.policy import ActOutput, is_image
from marl.nets import MaskedCategorical
from marl.normalization import ObsNormalizer
from marl.types import EnvSpec, GroupObs, GroupSpec, GroupTransition
from marl.trainer import (
    TrainingInterrupted,
    check_resume_config,
    default_run_dir,
    find_checkpoint,
    resolve_device,
    seed_everything,
    vector_env,
)

Learner = DQNLearner | SACLearner | TD3Learner
ActingNet = QPolicyNet | SACPolicyNet | TD3PolicyNet


# ---------------------------------------------------------------------------------------------
# Acting
# ---------------------------------------------------------------------------------------------
class OffPolicyActor:
    """Acting networks plus per-group observation normalizers: numpy observations in, actions out.

    Same interface as :class:`marl.multi_agent.policy.Policy` where evaluation and
    ``marl eval`` use it (``act``, ``state_dict``, ``load_state_dict``, ``device``).

    Args:
        spec: the env.
        net: the acting networks (:class:`QPolicyNet`, :class:`SACPolicyNet` or :class:`TD3PolicyNet`).
        norm: ``norm.obs`` and ``norm.obs_clip`` are read (images are never standardized).
        device: torch device of ``net``.
        seed: seed of the actor's torch generator (exploration draws).
        epsilon: probability of a uniformly random action in stochastic ``act`` calls that
            pass no ``epsilon`` (DQN: ``epsilon_final``; 0 for SAC and TD3).
    """

    def __init__(self, spec: EnvSpec, net: ActingNet, norm: NormConfig, device: torch.device | str, seed: int,
                 epsilon: float) -> None:
        self.spec = spec
        self.groups = {g.name: g for g in spec.groups}
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.epsilon = float(epsilon)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.obs_norm: dict[str, ObsNormalizer] = {}
        if norm.obs:
            for g in spec.groups:
                if not is_image(g.obs_space.shape, g.obs_space.dtype):
                    self.obs_norm[g.name] = ObsNormalizer(tuple(g.obs_space.shape), clip=norm.obs_clip)

    def normalize(self, name: str, obs: np.ndarray, alive: np.ndarray | None, update: bool) -> Tensor:
        """One group's observations ``[..., A, *obs_shape]`` normalized (stats updated only if ``update``)."""
        norm = self.obs_norm.get(name)
        if norm is not None:
            norm.training = update
            obs = norm(obs, alive)
        return torch.as_tensor(obs, device=self.device)

    def random_action(self, group: GroupSpec, lead: tuple[int, ...], mask: Tensor | None) -> Tensor:
        """Uniformly random actions ``[*lead, *action_shape]``: allowed discrete actions, or ``[-1, 1]^d`` boxes."""
        if group.discrete:
            logits = torch.zeros(*lead, int(group.action_space.n), device=self.device)
            return MaskedCategorical(logits, mask).sample(self.generator)
        shape = (*lead, *group.action_shape)
        return torch.rand(shape, generator=self.generator, device=self.device) * 2.0 - 1.0

    @torch.no_grad()
    def act(
        self,
        obs: Mapping[str, GroupObs],
        state: np.ndarray | None = None,
        deterministic: bool = False,
        update_stats: bool = False,
        with_value: bool = True,
        *,
        epsilon: float | None = None,
    ) -> ActOutput:
        """Actions for one step of ``E`` env copies.

        Args:
            obs: group -> :class:`GroupObs` with ``[E, A, ...]`` arrays.
            state: unused (off-policy critics are local); accepted for the Policy interface.
            deterministic: greedy / mode / noiseless actions, no random ones.
            update_stats: fold these observations into the normalizer statistics.
            with_value: unused (there are no state values); ``ActOutput.value`` stays empty.
            epsilon: per agent, the probability of a uniformly random action instead
                (``1`` = all random, the warm-up); ``None`` = :attr:`epsilon`. Ignored
                when ``deterministic``.

        Returns:
            ``ActOutput`` with ``action`` (replay form: discrete ids, or boxes in
            ``[-1, 1]``), ``env_action`` (numpy, scaled to the bounds) and ``obs``.
        """
        del state, with_value
        eps = 0.0 if deterministic else (self.epsilon if epsilon is None else float(epsilon))
        out = ActOutput({}, {}, {}, {}, {}, {})
        for name, o in obs.items():
            group = self.groups[name]
            x = self.normalize(name, o.obs, o.alive, update_stats)
            mask = None if o.action_mask is None else torch.as_tensor(o.action_mask, device=self.device).bool()
            lead = tuple(o.alive.shape)
            if eps >= 1.0:
                action = self.random_action(group, lead, mask)
            else:
                action = self.net.act(name, x, mask, deterministic, self.generator)
                if eps > 0.0:
                    explore = torch.rand(lead, generator=self.generator, device=self.device) < eps
                    explore = explore.view(*lead, *([1] * (action.dim() - len(lead))))
                    action = torch.where(explore, self.random_action(group, lead, mask), action)
            out.action[name] = action
            out.env_action[name] = self.net.env_action(name, action).cpu().numpy()
            out.obs[name] = x
        return out

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "obs_norm": {k: n.state_dict() for k, n in self.obs_norm.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        if set(self.obs_norm) != set(state["obs_norm"]):
            raise ValueError(f"checkpoint normalizers {sorted(state['obs_norm'])} do not match the config's "
                             f"{sorted(self.obs_norm)} (norm.obs changed?)")
        for k, n in self.obs_norm.items():
            n.load_state_dict(state["obs_norm"][k])


def build_actor(spec: EnvSpec, cfg: Config, device: torch.device | str = "cpu") -> OffPolicyActor:
    """The acting policy of an off-policy config (what a checkpoint's ``policy`` entry loads into)."""
    algo = cfg.algo
    if spec.turn_based:
        raise ValueError(f"{algo.name} needs simultaneous-move envs (one transition per agent per step); "
                         "this env is turn-based (AEC). Use algo.name=ppo")
    if isinstance(algo, DQNConfig):
        net, epsilon = QPolicyNet(spec, cfg.model, algo.dueling), algo.epsilon_final
    elif isinstance(algo, SACConfig):
        net, epsilon = SACPolicyNet(spec, cfg.model), 0.0
    elif isinstance(algo, TD3Config):
        net, epsilon = TD3PolicyNet(spec, cfg.model, algo.exploration_noise), 0.0
    else:
        raise ValueError(f"algo.name={algo.name!r} is not an off-policy algorithm (dqn, sac, td3)")
    return OffPolicyActor(spec, net, cfg.norm, device, cfg.seed, epsilon)


def build_learner(actor: OffPolicyActor, cfg: Config) -> Learner:
    """The learner that trains ``actor.net`` (and owns critics, targets, optimizers)."""
    algo, seed = cfg.algo, cfg.seed + 1  # a stream apart from the actor's
    if isinstance(algo, DQNConfig):
        return DQNLearner(actor.net, algo)
    if isinstance(algo, SACConfig):
        return SACLearner(actor.net, actor.spec, cfg.model, algo, seed)
    return TD3Learner(actor.net, actor.spec, cfg.model, algo, seed)


# ---------------------------------------------------------------------------------------------
# Replay: rows in, batches out, state
# ---------------------------------------------------------------------------------------------
class GoalFunctions(NamedTuple):
    """What HER needs from a goal env (Gymnasium's goal-env API).

    Attributes:
        compute_reward: vectorized ``(achieved [K, G], desired [K, G], info) -> [K]``.
        terminate_on_success: the env ends an episode when the goal is reached (its
            ``compute_terminated(g, g, None)`` is true); relabelled successes are then terminal.
        success_reward: ``compute_reward(g, g, None)``, the reward of a reached goal.
        env: the env the functions are bound to (close it when done).
    """

    compute_reward: Callable[[np.ndarray, np.ndarray, Any], np.ndarray]
    terminate_on_success: bool
    success_reward: float
    env: Any


def goal_functions(cfg: Config, goal_dim: int) -> GoalFunctions:
    """The reward (and termination) functions of the config's goal env, for HER."""
    env = make_raw_env(cfg.env.id, cfg.env.kwargs)
    base = getattr(env, "unwrapped", env)
    reward_fn = getattr(base, "compute_reward", None)
    if not callable(reward_fn):
        env.close()
        raise ValueError(f"algo.her needs the env's compute_reward(achieved_goal, desired_goal, info); "
                         f"{cfg.env.id!r} has none. Set algo.her=false")
    goal = np.zeros((1, goal_dim), np.float32)
    terminated_fn = getattr(base, "compute_terminated", None)
    terminates = bool(np.all(terminated_fn(goal, goal, None))) if callable(terminated_fn) else False
    return GoalFunctions(reward_fn, terminates, float(np.asarray(reward_fn(goal, goal, None)).reshape(-1)[0]), env)


def build_replays(spec: EnvSpec, cfg: Config, goals: GoalFunctions | None) -> dict[str, ReplayBuffer]:
    """One replay buffer per group (PER and/or HER as configured); capacity rounded down to a multiple of E."""
    algo: OffPolicyConfig = cfg.algo
    n_envs = cfg.env.num_envs
    capacity = algo.buffer_size - algo.buffer_size % n_envs
    out: dict[str, ReplayBuffer] = {}
    for g in spec.groups:
        schema = replay_schema(g)
        if algo.her:
            out[g.name] = HerReplayBuffer(
                schema, capacity, n_envs, goal_slice=g.goal, compute_reward=goals.compute_reward,
                strategy=algo.her_strategy, n_sampled_goal=algo.n_sampled_goal,
                terminate_on_success=goals.terminate_on_success, success_reward=goals.success_reward,
                gamma=algo.gamma, sampler=PrioritizedSampler(capacity, per_alpha=algo.per_alpha, per_eps=algo.per_eps,
                                                             per_beta=algo.per_beta) if algo.per else None)
        elif algo.per:
            out[g.name] = PrioritizedReplayBuffer(schema, capacity, n_envs, n_step=algo.n_step, gamma=algo.gamma,
                                                  per_alpha=algo.per_alpha, per_eps=algo.per_eps, per_beta=algo.per_beta)
        else:
            out[g.name] = ReplayBuffer(schema, capacity, n_envs, n_step=algo.n_step, gamma=algo.gamma)
    return out


def replay_rows(before: GroupObs, action: np.ndarray, tr: GroupTransition, after: GroupObs,
                achieved: np.ndarray | None, next_achieved: np.ndarray | None) -> dict[str, np.ndarray]:
    """One group's replay rows ``[E, A, ...]`` of one vector step.

    ``next_obs`` is the real observation after the step: ``tr.final_obs`` where the
    agent's episode ended (never the auto-reset observation). Where an episode ended,
    ``next_alive`` is the agent's ``alive`` and ``next_action_mask`` allows every action
    (the env reports no mask for a final observation).
    """
    ended = tr.terminated | tr.truncated
    ended_obs = ended.reshape(*ended.shape, *([1] * (after.obs.ndim - ended.ndim)))
    rows = {
        "obs": before.obs,
        "action": action,
        "reward": np.asarray(tr.reward, np.float32),
        "next_obs": np.where(ended_obs, tr.final_obs, after.obs),
        "terminated": tr.terminated,
        "truncated": tr.truncated,
        "alive": before.alive,
        "next_alive": np.where(ended, before.alive, after.alive),
    }
    if before.action_mask is not None:
        rows["action_mask"] = before.action_mask.astype(bool)
        rows["next_action_mask"] = ended[..., None] | after.action_mask.astype(bool)
    if achieved is not None:
        rows["achieved_goal"], rows["next_achieved_goal"] = achieved, next_achieved
    return rows


def to_batch(sample: ReplaySample, norm: ObsNormalizer | None, device: torch.device) -> OffPolicyBatch:
    """A sample as tensors on ``device``, observations normalized with frozen statistics."""

    def obs(x: np.ndarray) -> Tensor:
        return torch.as_tensor(x if norm is None else norm.normalize(x), device=device)

    def t(x: np.ndarray | None) -> Tensor | None:
        return None if x is None else torch.as_tensor(x, device=device)

    return OffPolicyBatch(obs(sample.obs), t(sample.action), t(sample.reward_n), t(sample.discount_n),
                          obs(sample.next_obs_n), t(sample.terminated_n), t(sample.alive), t(sample.weights),
                          t(sample.action_mask), t(sample.next_action_mask_n))


def replay_bytes_per_row(buf: ReplayBuffer) -> int:
    """Bytes one stored row takes in a checkpoint: its fields, plus 8 per PER priority, plus 16 per agent for HER."""
    n = sum(int(np.prod(spec.shape)) * spec.dtype.itemsize for spec in buf.schema.values())
    if buf.sampler.prioritized:
        n += 8
    if isinstance(buf, HerReplayBuffer):
        n += 16 * buf.trajectories.start.shape[2]
    return n


def replay_state(buf: ReplayBuffer) -> dict[str, Any]:
    """A replay buffer as tensors and numbers (for ``weights_only`` checkpoints)."""
    st = buf.storage
    state: dict[str, Any] = {
        "fields": {name: torch.from_numpy(np.array(st.field(name))) for name in buf.schema},
        "pos": torch.from_numpy(st.pos.copy()), "size": torch.from_numpy(st.size.copy()),
        "count": torch.from_numpy(st.count.copy()),
    }
    if buf.sampler.prioritized:
        state["priorities"] = torch.from_numpy(buf.sampler.tree.leaves)
        state["max_priority"] = float(buf.sampler.max_priority)
    if isinstance(buf, HerReplayBuffer):
        tr = buf.trajectories
        state["her"] = {"start": torch.from_numpy(tr.start.copy()), "end": torch.from_numpy(tr.end.copy()),
                        "open": torch.from_numpy(tr._open.copy())}
    return state


def load_replay_state(buf: ReplayBuffer, state: dict[str, Any]) -> None:
    """Restore :func:`replay_state` into a buffer built with the same schema and capacity."""
    st = buf.storage
    for name in buf.schema:
        src = state["fields"][name].numpy()
        if src.shape != st._data[name].shape:
            raise ckpt.CheckpointError(f"saved replay field {name!r} is {src.shape}, the buffer {st._data[name].shape}: "
                                       "algo.buffer_size or env.num_envs changed; resume with the run's config")
        st._data[name][...] = src
    st.pos[:], st.size[:], st.count[:] = (state[k].numpy() for k in ("pos", "size", "count"))
    if buf.sampler.prioritized:
        leaves = state["priorities"].numpy()
        buf.sampler.tree.update(np.arange(leaves.shape[0]), leaves)
        buf.sampler.max_priority = float(state["max_priority"])
    if isinstance(buf, HerReplayBuffer):
        tr = buf.trajectories
        tr.start[...], tr.end[...], tr._open[...] = (state["her"][k].numpy() for k in ("start", "end", "open"))


def cut_lanes(buf: ReplayBuffer) -> None:
    """End every running trajectory at the newest row of its lane (marked truncated).

    For a resumed run, whose env copies start new episodes: n-step windows and HER
    goals must not run from the old episode into the new one.
    """
    st = buf.storage
    lanes = np.nonzero(st.size > 0)[0]
    flat = ((st.pos[lanes] - 1) % st.lane_length) * st.n_envs + lanes
    data = st._flat
    running = data["alive"][flat] & ~data["terminated"][flat] & ~data["truncated"][flat]
    data["truncated"][flat] |= running
    if isinstance(buf, HerReplayBuffer):
        tr = buf.trajectories
        for i, agent in zip(*np.nonzero(running)):
            lane, last = lanes[i], int(st.count[lanes[i]] - 1)
            first = max(int(tr._open[lane, agent]), last - st.lane_length + 1)
            tr.end[np.arange(first, last + 1) % st.lane_length, lane, agent] = last
        tr._open[...] = -1


def achieved_goals(env: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """Achieved goals of the latest ``obs`` and ``final_obs`` of every chunk, ``[E, A, G]`` per group."""
    parts = [env.achieved_goals(k) for k in range(env.num_chunks)]
    if parts[0] is None:
        return None
    return ({g: np.concatenate([p.obs[g] for p in parts]) for g in parts[0].obs},
            {g: np.concatenate([p.final_obs[g] for p in parts]) for g in parts[0].final_obs})


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------
class OffPolicyTrainer:
    """Builds an off-policy run from a :class:`Config` and runs it (see the module docstring).

    Run directory, checkpoints (``latest.pt``, ``best.pt``, ``step_<env_steps>.pt``),
    evaluation, signals (SIGINT/SIGTERM save ``latest.pt`` and exit 130/143),
    ``summary.json`` and ``resume=RUN_DIR`` behave as in :class:`marl.trainer.Trainer`.
    """

    def __init__(self, cfg: Config) -> None:
        if not isinstance(cfg.algo, OffPolicyConfig):
            raise ValueError(f"OffPolicyTrainer runs dqn, sac or td3, not {cfg.algo.name!r}")
        self.resume_path: Path | None = None
        saved = None
        if cfg.resume:
            self.resume_path = find_checkpoint(cfg.resume)
            saved = ckpt.load(self.resume_path)
            check_resume_config(saved["config"], cfg, self.resume_path)
            if not cfg.run_dir:
                cfg = replace(cfg, run_dir=str(self.resume_path.parent.parent))
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        ckpt.clean_stale(self.ckpt_dir)
        dump_yaml(cfg, self.run_dir / "config.yaml")
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.env = vector_env(cfg, cfg.env.num_envs)
        self.spec: EnvSpec = self.env.spec
        self.goal_env = None
        try:
            self.actor = build_actor(self.spec, cfg, self.device)
            self.learner = build_learner(self.actor, cfg)
            goals = None
            if cfg.algo.her:
                missing = [g.name for g in self.spec.groups if g.goal is None]
                if missing:
                    raise ValueError(f"algo.her: groups {missing} have no goal (the env's observations are not "
                                     "Dict(observation, achieved_goal, desired_goal)). Set algo.her=false")
                start, stop = self.spec.groups[0].goal
                goals = goal_functions(cfg, stop - start)
                self.goal_env = goals.env
            self.replay = build_replays(self.spec, cfg, goals)
        except Exception:
            self.close()
            raise
        self.rng = np.random.default_rng(cfg.seed)
        self.env_steps = self.agent_steps = self.iteration = self.episodes = 0
        self.best_eval: dict[str, Any] | None = None
        self.last_eval: dict[str, Any] | None = None
        self.eval_history: list[dict[str, Any]] = []
        self.wall_time_prev = 0.0
        self._start: float | None = None
        if saved is not None:
            self._restore(ckpt.load(self.resume_path, map_location=self.device))

    def close(self) -> None:
        self.env.close()
        if self.goal_env is not None:
            self.goal_env.close()

    # ------------------------------------------------------------------ checkpoints
    def state(self, with_replay: bool = False) -> dict[str, Any]:
        state = {
            "config": to_dict(self.cfg),
            "policy": self.actor.state_dict(),
            "learner": self.learner.state_dict(),
            "counters": {"env_steps": self.env_steps, "agent_steps": self.agent_steps, "iteration": self.iteration,
                         "episodes": self.episodes, "wall_time_s": self._wall_time()},
            "rng": {**ckpt.rng_state(), "replay": ckpt.generator_state(self.rng),
                    "actor": self.actor.generator.get_state()},
            "best_eval": self.best_eval,
            "eval_history": self.eval_history,
        }
        if with_replay:
            state["replay"] = {g: replay_state(buf) for g, buf in self.replay.items()}
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["policy"])
        self.learner.load_state_dict(state["learner"])
        c = state["counters"]
        self.env_steps, self.agent_steps = int(c["env_steps"]), int(c["agent_steps"])
        self.iteration, self.episodes = int(c["iteration"]), int(c["episodes"])
        self.wall_time_prev = float(c["wall_time_s"])
        ckpt.set_rng_state(state["rng"])
        self.rng.bit_generator.state = state["rng"]["replay"]
        self.actor.generator.set_state(state["rng"]["actor"])
        self.best_eval = state.get("best_eval")
        self.eval_history = list(state.get("eval_history") or [])
        if "replay" in state:
            for g, buf in self.replay.items():
                load_replay_state(buf, state["replay"][g])
                cut_lanes(buf)

    def save(self, name: str = "latest.pt") -> Path:
        with_replay = self.cfg.algo.save_replay and name == "latest.pt"
        return ckpt.save(self.state(with_replay), self.ckpt_dir / name)

    def _rotate(self) -> None:
        keep = self.cfg.checkpoint.keep_last
        if keep <= 0:
            return
        self.save(f"step_{self.env_steps}.pt")
        numbered = sorted(self.ckpt_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for old in numbered[:-keep]:
            old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, episodes: int | None = None) -> dict[str, Any]:
        from marl.evaluation import evaluate

        cfg = self.cfg
        return evaluate(self.actor, lambda n: vector_env(cfg, n, backend="sync"), episodes or cfg.eval.episodes,
                        cfg.seed, deterministic=cfg.eval.deterministic, num_envs=cfg.eval.num_envs)

    def _eval_and_keep_best(self, logger: Logger) -> None:
        result = self.evaluate()
        result["env_steps"] = self.env_steps
        result["wall_time_s"] = self._wall_time()
        self.last_eval = result
        self.eval_history.append({"env_steps": self.env_steps, "wall_time_s": result["wall_time_s"],
                                  "mean_return": result["mean_return"]})
        logger.scalars(flatten_eval(result), self.env_steps)
        if self.best_eval is None or result["mean_return"] > self.best_eval["mean_return"]:
            self.best_eval = result
            self.save("best.pt")

    def _wall_time(self) -> float:
        return self.wall_time_prev + (time.time() - self._start if self._start is not None else 0.0)

    def _next_multiple(self, interval: int) -> int:
        return 0 if interval <= 0 else (self.env_steps // interval + 1) * interval

    # ------------------------------------------------------------------ loop pieces
    def exploration(self) -> float:
        """Epsilon of the next collected step: 1 in warm-up, DQN's linear schedule, else 0."""
        algo = self.cfg.algo
        if self.env_steps < algo.learning_starts:
            return 1.0
        if isinstance(algo, DQNConfig):
            return linear_epsilon(algo.epsilon_start, algo.epsilon_final, algo.exploration_fraction,
                                  self.env_steps / self.cfg.total_env_steps)
        return 0.0

    def collect(self, obs: dict[str, GroupObs], goals: dict[str, np.ndarray] | None, epsilon: float):
        """One vector step: act, step, store rows; returns ``(next obs, next goals, finished episodes)``."""
        out = self.actor.act(obs, None, deterministic=False, update_stats=True, with_value=False, epsilon=epsilon)
        step = self.env.step(out.env_action)
        after_goals = achieved_goals(self.env) if goals is not None else None
        for g, buf in self.replay.items():
            tr = step.transition[g]
            achieved = next_achieved = None
            if after_goals is not None:
                achieved = goals[g]
                ended = (tr.terminated | tr.truncated)[..., None]
                next_achieved = np.where(ended, after_goals[1][g], after_goals[0][g])
            buf.add(replay_rows(obs[g], out.action[g].cpu().numpy(), tr, step.obs[g], achieved, next_achieved))
            self.agent_steps += int(obs[g].alive.sum())
        self.env_steps += self.env.num_envs
        return step.obs, None if after_goals is None else after_goals[0], step.episodes

    def train_step(self) -> dict[str, float]:
        """One gradient step: sample every group's replay, update, feed PER priorities back."""
        algo = self.cfg.algo
        beta = per_beta_at(self.env_steps / self.cfg.total_env_steps, algo.per_beta)
        samples = {g: buf.sample(algo.batch_size, self.rng, beta) for g, buf in self.replay.items()}
        batches = {g: to_batch(s, self.actor.obs_norm.get(g), self.device) for g, s in samples.items()}
        out = self.learner.update(batches)
        for g, buf in self.replay.items():
            buf.update_priorities(samples[g].indices, out.td_error[g])  # a no-op without PER
        if algo.per:
            out.metrics["per_beta"] = beta
        return out.metrics

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Train to ``total_env_steps``; write checkpoints and ``summary.json``; return the summary."""
        cfg, algo = self.cfg, self.cfg.algo
        logger = Logger(self.run_dir, cfg.log.tensorboard, cfg.log.progress, cfg.total_env_steps)
        self._start = time.time()
        interrupted: list[int] = []

        def on_signal(signum, _frame):
            if not interrupted:
                interrupted.append(signum)

        old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        next_eval = self._next_multiple(cfg.eval.interval)
        next_ckpt = self._next_multiple(cfg.checkpoint.interval)
        sps_start, sps_steps, sps_agent = time.time(), self.env_steps, self.agent_steps
        first = next(iter(self.replay.values()))
        ready_rows = min(first.capacity, max(algo.learning_starts, algo.batch_size))
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        window_episodes: list = []
        since_train = 0
        try:
            logger.text("config", "```\n" + json.dumps(to_dict(cfg), indent=1) + "\n```")
            logger.scalars({"replay/bytes_per_row": float(sum(replay_bytes_per_row(b) for b in self.replay.values()))}, 0)
            # A resumed run starts new episodes, seeded apart from the first ones.
            obs, _ = self.env.reset(cfg.seed + self.env_steps)
            goals = achieved_goals(self.env)
            goals = None if goals is None else goals[0]
            while self.env_steps < cfg.total_env_steps and not interrupted:
                epsilon = self.exploration()
                obs, goals, finished = self.collect(obs, goals, epsilon)
                self.episodes += len(finished)
                window_episodes.extend(finished)
                if len(first) < ready_rows:
                    continue
                since_train += self.env.num_envs
                while since_train >= algo.train_freq:
                    since_train -= algo.train_freq
                    for _ in range(algo.gradient_steps):
                        for k, v in self.train_step().items():
                            sums[k] = sums.get(k, 0.0) + v
                            counts[k] = counts.get(k, 0) + 1
                    self.iteration += 1
                    if self.iteration % cfg.log.interval == 0:
                        elapsed = max(time.time() - sps_start, 1e-9)
                        row = {f"train/{k}": v / counts[k] for k, v in sums.items()}
                        if isinstance(algo, DQNConfig):
                            row["train/epsilon"] = epsilon
                        row.update(episode_metrics(window_episodes, self.spec))
                        row["time/sps"] = (self.env_steps - sps_steps) / elapsed
                        row["time/agent_sps"] = (self.agent_steps - sps_agent) / elapsed
                        row["time/env_frames"] = float(self.env_steps * cfg.env.action_repeat)
                        row["time/agent_steps"] = float(self.agent_steps)
                        row["time/grad_steps"] = float(self.learner.grad_steps)
                        logger.scalars(row, self.env_steps)
                        self._status(logger, row)
                        sums, counts, window_episodes = {}, {}, []
                if next_eval and self.env_steps >= next_eval:
                    self._eval_and_keep_best(logger)
                    next_eval = self._next_multiple(cfg.eval.interval)
                if next_ckpt and self.env_steps >= next_ckpt:
                    self.save()
                    self._rotate()
                    next_ckpt = self._next_multiple(cfg.checkpoint.interval)
            if interrupted:
                self.save()
                logger.message(
                    f"{signal.Signals(interrupted[0]).name}: stopped at {self.env_steps:,} env steps; saved "
                    f"{self.ckpt_dir / 'latest.pt'}. Resume with: marl train {self.run_dir / 'config.yaml'} "
                    f"resume={self.run_dir}"
                )
                raise TrainingInterrupted(128 + interrupted[0])
            if self.last_eval is None or self.last_eval["env_steps"] != self.env_steps:
                self._eval_and_keep_best(logger)
            self.save()
            summary = self.summary()
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            logger.hparams(flatten_dict({k: v for k, v in to_dict(cfg).items() if k not in ("run_dir", "resume")}),
                           {"final_eval_return": summary["final_eval"]["mean_return"]})
            logger.message(
                f"done: {self.env_steps:,} env steps in {summary['wall_time_s']:.0f}s ({summary['sps']:.0f} env steps/s); "
                f"final eval return {summary['final_eval']['mean_return']:.2f}, "
                f"best {summary['best_eval']['mean_return']:.2f}; run dir {self.run_dir}"
            )
            return summary
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
            logger.close()
            self.close()

    def _status(self, logger: Logger, row: dict[str, float]) -> None:
        ret = row.get("rollout/ep_return")
        best = self.best_eval["mean_return"] if self.best_eval else None
        loss = row.get("train/q_loss")
        logger.status(self.env_steps, "  ".join(part for part in (
            f"it {self.iteration}",
            f"ret {ret:.2f}" if ret is not None else "ret -",
            f"q_loss {loss:.3g}" if loss is not None and math.isfinite(loss) else "",
            f"best eval {best:.2f}" if best is not None else "",
            f"sps {row['time/sps']:.0f}",
        ) if part))

    def summary(self) -> dict[str, Any]:
        wall = self._wall_time()
        return {
            "env_steps": self.env_steps,
            "agent_steps": self.agent_steps,
            "env_frames": self.env_steps * self.cfg.env.action_repeat,
            "iterations": self.iteration,
            "episodes": self.episodes,
            "grad_steps": self.learner.grad_steps,
            "wall_time_s": wall,
            "sps": self.env_steps / max(wall, 1e-9),
            "agent_sps": self.agent_steps / max(wall, 1e-9),
            "final_eval": self.last_eval,
            "best_eval": self.best_eval,
            "eval_history": self.eval_history,
            "n_parameters": sum(p.numel() for p in self.learner.trainable()),
        }

"""The config schemas: one dataclass per section, each field with a type, a default and a one-line doc.

An experiment is ``env × algo × model × run settings`` (:class:`Config`); ``algo`` is the
section of the algorithm named by ``algo.name`` (the registry, :mod:`marl.registry`, maps the
name to its schema here). Loading, overrides and validation are in :mod:`marl.config`, which
re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def _f(default: Any, doc: str) -> Any:
    """A dataclass field with a default (copied when mutable) and a one-line doc."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


# --------------------------------------------------------------------------- sections
@dataclass
class EnvConfig:
    """Which environment to train on and how its copies are run."""

    id: str = _f("mpe2.simple_spread_v3",
                 "env id: a Gymnasium id (CartPole-v1) or a module path (mpe2.simple_spread_v3, envs.grid_nav)")
    kwargs: dict = _f({}, "keyword arguments passed to the env constructor")
    num_envs: int = _f(8, "env copies stepped together (E)")
    backend: Literal["sync", "subprocess", "batched"] = _f(
        "sync", "sync: in-process; subprocess: worker processes with shared memory; batched: one simulation of "
        "all copies as arrays (ids with a batched implementation, e.g. the mpe2 scenarios; see marl.env.batched)")
    num_workers: int = _f(0, "worker processes for the subprocess backend; 0 = one per CPU core (at most num_envs)")
    overlap: bool = _f(True, "subprocess backend: step one chunk of env copies while the policy acts on another")
    groups: dict = _f({}, "explicit agent groups {group: [agent, ...]}; "
                          "empty = group by name prefix (adversary_0 -> adversary)")
    single_group: bool = _f(False, "every agent in one group 'all': self-play with one network when seats have "
                                   "different name prefixes (go: black_0, white_0); the agents' spaces must be equal "
                                   "(or env.pad)")
    frame_stack: int = _f(1, "stack the last k observations (images: on the channel axis [H, W, C*k]); 1 = off")
    grayscale: bool = _f(False, "convert image observations to one channel")
    resize: list = _f([], "resize image observations to [H, W]; empty = keep")
    action_repeat: int = _f(1, "repeat each chosen action k env frames, summing rewards; "
                               "env steps count agent decisions")
    pad: bool = _f(False, "pad observations/actions (SuperSuit) so unlike agents can share one network")


@dataclass
class NormConfig:
    """Observation, reward and advantage normalization switches."""

    obs: bool = _f(True, "standardize observations with running mean/std (float64 Welford), frozen in evaluation")
    obs_clip: float = _f(10.0, "clip normalized observations to [-obs_clip, obs_clip]")
    reward: bool = _f(True, "scale rewards by the running std of the discounted return (no mean subtraction)")
    reward_clip: float = _f(10.0, "clip scaled rewards to [-reward_clip, reward_clip]; 0 = no clipping")
    advantage: bool = _f(True, "standardize advantages per minibatch")


@dataclass
class ModelConfig:
    """Networks: sizes, and how agents share parameters."""

    hidden: list = _f([64, 64], "hidden layer widths of the MLPs")
    activation: Literal["tanh", "relu", "elu", "silu"] = _f("tanh", "hidden activation")
    sharing: Any = _f("shared", "shared | independent | {agent_or_glob: parameter_set_name}, per group")
    agent_id: bool = _f(True, "append a one-hot agent id to the input of a network that serves several agents")
    strategy: Literal["batched", "fork", "loop"] = _f("batched", "forward strategy for independent parameters")
    critic: Literal["local", "central"] = _f("local", "local: V(own obs) (IPPO); central: V(global state) (MAPPO)")
    encoder: Literal["auto", "mlp", "cnn"] = _f("auto", "observation encoder: auto = CNN for [H, W, C] observations "
                                                "(uint8 images, pixels / 255; other planes of 36+ cells, e.g. board "
                                                "games, as they are), MLP otherwise; mlp / cnn force one")
    init_log_std: float = _f(0.0, "initial log std of Gaussian policies")
    recurrent: Literal["none", "gru", "lstm"] = _f("none", "recurrent core between encoder and head (ppo, dqn, vdn, "
                                                           "qmix): none = feed-forward; gru | lstm, one per parameter "
                                                           "set")
    rnn_hidden: int = _f(64, "width of the recurrent core (state size: rnn_hidden for gru, 2x for lstm)")


@dataclass
class PPOConfig:
    """Proximal Policy Optimization (Schulman et al. 2017) hyperparameters."""

    name: Literal["ppo"] = _f("ppo", "algorithm name")
    lr: float = _f(3e-4, "Adam learning rate")
    anneal_lr: bool = _f(True, "decay the learning rate linearly to 0 over training")
    num_steps: int = _f(128, "rollout length per env copy (T)")
    num_minibatches: int = _f(4, "minibatches per epoch; rollout rows (T*E) must divide evenly")
    update_epochs: int = _f(4, "passes over each rollout (K)")
    gamma: float = _f(0.99, "discount factor, in (0, 1]")
    gae_lambda: float = _f(0.95, "GAE lambda, in [0, 1]")
    clip_coef: float = _f(0.2, "PPO ratio clip epsilon")
    anneal_clip: bool = _f(False, "decay clip_coef linearly to 0 over training (rl-zoo's lin_0.2)")
    clip_value_loss: bool = _f(False, "clip the value update around the old value estimate (by clip_coef)")
    ent_coef: float = _f(0.01, "entropy bonus coefficient")
    vf_coef: float = _f(0.5, "value loss coefficient")
    max_grad_norm: float = _f(0.5, "global gradient norm clip; 0 = off")
    target_kl: float = _f(0.0, "stop the epochs of an update early when approx KL exceeds this; 0 = off")
    bootstrap_on_truncation: bool = _f(True, "bootstrap from V(final obs) on time limits; "
                                             "false treats them as terminal")
    optimizer: Literal["common", "per_group"] = _f("common", "one optimizer over all groups, or one per group")
    adam_eps: float = _f(1e-5, "Adam epsilon")
    bptt_len: int = _f(0, "recurrent models: steps per training chunk (BPTT length); num_steps must divide by it, "
                          "minibatches hold whole chunks; 0 = the whole rollout (num_steps)")

    def chunk_len(self) -> int:
        """Steps per BPTT chunk: ``bptt_len``, or ``num_steps`` when it is 0."""
        return self.bptt_len or self.num_steps


@dataclass
class APPOConfig(PPOConfig):
    """Asynchronous PPO (IMPALA-style collection, Espeholt et al. 2018): ``env.num_workers`` worker processes
    collect ``num_steps``-step rollouts with the parameters they have; the learner updates on whichever
    rollout is ready first, its policy lag corrected by V-trace (``gae_lambda`` is V-trace's lambda)."""

    name: Literal["appo"] = _f("appo", "algorithm name")
    num_steps: int = _f(128, "rollout length per env copy (T); each worker sends T x num_envs/num_workers rows")
    num_minibatches: int = _f(4, "minibatches per epoch of one worker's rollout; its rows (T*E/W) must divide evenly")
    gae_lambda: float = _f(0.95, "V-trace lambda, in [0, 1]: trace coefficients c_s = lambda * min(c_bar, pi/mu)")
    rho_bar: float = _f(1.0, "V-trace: clip of the importance ratio pi/mu in the TD errors and advantages")
    c_bar: float = _f(1.0, "V-trace: clip of the importance ratio pi/mu in the trace (<= rho_bar)")
    max_lag: int = _f(32, "drop rollouts whose oldest step is more than this many learner updates old; -1 = never")
    worker_timeout_s: float = _f(300.0, "seconds the learner waits for any rollout before it stops with an error")


@dataclass
class OffPolicyConfig:
    """Fields every off-policy algorithm shares: replay, training cadence, targets, PER, HER.

    Not an algorithm itself: :class:`DQNConfig`, :class:`SACConfig` and :class:`TD3Config`
    extend it (and change some defaults). Units: ``env steps`` are summed over env copies
    (a vector step of E copies is E env steps); a *row* is one env step of one env copy,
    all agents of a group.
    """

    name: str = _f("", "algorithm name")
    lr: float = _f(3e-4, "Adam learning rate of every network (and of SAC's log_alpha)")
    adam_eps: float = _f(1e-8, "Adam epsilon")
    gamma: float = _f(0.99, "discount factor, in (0, 1]")
    buffer_size: int = _f(1_000_000, "replay capacity in rows per group; rounded down to a multiple of env.num_envs")
    learning_starts: int = _f(1_000, "env steps of uniformly random actions; "
                                     "training starts at max(this, batch_size) rows")
    batch_size: int = _f(256, "rows per gradient step (B)")
    train_freq: int = _f(1, "env steps collected between training phases")
    gradient_steps: int = _f(1, "gradient steps per training phase")
    tau: float = _f(0.005, "target update: target <- (1 - tau) target + tau online; 1 = hard copy")
    target_update_interval: int = _f(1, "gradient steps between target updates")
    max_grad_norm: float = _f(0.0, "global gradient norm clip of each optimizer; 0 = off")
    n_step: int = _f(1, "n-step TD targets, cut at episode ends; 1 = one-step")
    per: bool = _f(False, "prioritized replay (sum tree), priorities (|TD error| + per_eps)^per_alpha")
    per_alpha: float = _f(0.6, "PER prioritization exponent in [0, 1]; 0 = uniform")
    per_beta: float = _f(0.4, "PER importance exponent at the start, annealed linearly to 1 over training")
    per_eps: float = _f(1e-6, "PER constant added to |TD error| so no row has priority 0")
    her: bool = _f(False, "hindsight relabelling of goals (goal envs only; one-step targets)")
    her_strategy: Literal["future", "final", "episode", "random"] = _f("future", "where relabelled goals come from")
    n_sampled_goal: int = _f(4, "relabelled goals per real transition: a fraction k/(k+1) of each batch")
    save_replay: bool = _f(False, "also write the replay into latest.pt and step_*.pt "
                                  "(bytes: replay/bytes_per_row x buffer_size)")
    num_actors: int = _f(0, "Ape-X: actor processes stepping env.num_envs / num_actors env copies each and "
                            "streaming rows to the learner; 0 = the synchronous loop (dqn, sac, td3)")
    actor_batch: int = _f(16, "Ape-X: vector steps an actor collects before sending them as one message")
    weight_sync_interval: int = _f(50, "Ape-X: gradient steps between weight (and obs statistics) sends to the actors")


@dataclass
class DQNConfig(OffPolicyConfig):
    """Deep Q-Network (Mnih et al. 2015) with double-Q targets (van Hasselt et al. 2016), Huber loss,
    epsilon-greedy exploration and an optional dueling head (Wang et al. 2016); discrete actions."""

    name: Literal["dqn"] = _f("dqn", "algorithm name")
    lr: float = _f(1e-4, "Adam learning rate")
    buffer_size: int = _f(100_000, "replay capacity in rows per group; rounded down to a multiple of env.num_envs")
    batch_size: int = _f(32, "rows per gradient step (B)")
    train_freq: int = _f(4, "env steps collected between training phases")
    tau: float = _f(1.0, "target update: target <- (1 - tau) target + tau online; 1 = hard copy")
    target_update_interval: int = _f(1_000, "gradient steps between target updates")
    max_grad_norm: float = _f(10.0, "global gradient norm clip; 0 = off")
    exploration_fraction: float = _f(0.1, "fraction of total_env_steps over which epsilon decays linearly")
    epsilon_start: float = _f(1.0, "epsilon-greedy: probability of a random action at the start")
    epsilon_final: float = _f(0.05, "epsilon after the decay (also the epsilon of stochastic evaluation)")
    double_q: bool = _f(True, "double DQN: the online network picks the next action, the target network values it")
    dueling: bool = _f(False, "dueling head Q = V + A - mean(A)")
    apex_epsilon_base: float = _f(0.4, "Ape-X actor i's epsilon is base ** (1 + alpha * i / (N - 1)) "
                                       "(replaces the linear schedule when algo.num_actors > 0)")
    apex_epsilon_alpha: float = _f(7.0, "Ape-X epsilon spread exponent alpha (see apex_epsilon_base)")
    seq_len: int = _f(20, "recurrent models: env steps per stored sequence, burn-in included; a sequence ends "
                          "early (padded, masked) at its episode's end")
    burn_in: int = _f(5, "recurrent models: first steps of a sequence that continues an episode, which only warm "
                         "the stored hidden state (no gradient, not in the loss); consecutive sequences of an "
                         "episode overlap by this many steps, so each step is in the loss once")
    per_eta: float = _f(0.9, "recurrent models with PER: a sequence's priority is eta * max|TD error| + "
                             "(1 - eta) * mean|TD error| over its loss steps")


@dataclass
class VDNConfig(DQNConfig):
    """Value-Decomposition Networks (Sunehag et al. 2018) on the DQN core: per-agent Q networks whose
    values are summed into one team value ``Q_tot``, trained on joint transitions with the team reward
    (the sum of every agent's reward) through one optimizer. Every agent of every group (all with Discrete
    actions) is in the one team; a replay row is one env step of the whole team."""

    name: Literal["vdn"] = _f("vdn", "algorithm name")
    lr: float = _f(5e-4, "Adam learning rate of the agents' Q networks (and of the mixer)")
    batch_size: int = _f(128, "team rows (env steps of all agents) per gradient step (B)")
    buffer_size: int = _f(100_000, "replay capacity in team rows; rounded down to a multiple of env.num_envs")
    td_loss: Literal["mse", "huber"] = _f("mse", "loss of the team TD error: mse (as in the VDN and QMIX papers) "
                                                 "or huber (threshold 1)")
    standardize_rewards: bool = _f(False, "standardize the team rewards of each sampled batch (minus their mean, over "
                                          "their std) before the TD target, as EPyMARL's standardise_rewards")
    standardize_returns: bool = _f(False, "learn Q_tot in standardized units: TD targets minus their running mean, "
                                          "over their running std (EPyMARL's standardise_returns); without it QMIX's "
                                          "mixer gain grew until Q_tot diverged on spread (bench/README.md)")
    return_stats: Literal["targets", "returns"] = _f(
        "targets", "with standardize_returns, what its running mean and std take in: the TD targets (EPyMARL), or "
                   "the Monte-Carlo team returns G of the sampled rows whose episode ended (return_horizon rows "
                   "ahead): bounded by the rewards, so a diverging Q_tot cannot stretch its own units; the std is "
                   "floored at 5% of the largest |G| seen (feed-forward agents only)")
    softmax_beta: float = _f(0.0, "inverse temperature beta of RES's softmax target (Pan et al. 2021): the next "
                                  "state's value is the softmax-weighted mean of Q_tot over the greedy joint action "
                                  "and those where one agent deviates (in Q_tot's units, standardized with "
                                  "standardize_returns); 0 = the greedy target (with double_q the double-Q "
                                  "value; a large beta tends to the set's max, at least that)")
    return_reg: float = _f(0.0, "weight lambda of the penalty lambda * (Q_tot - G)^2, G the Monte-Carlo discounted "
                                "team return of the row's episode (Pan et al. 2021's regularizer against "
                                "overestimation); 0 = off")
    return_horizon: int = _f(100, "with return_reg or return_stats=returns: rows looked ahead for G; a row "
                                  "whose episode has not ended within them (or not yet) does not count; the "
                                  "gather's cost grows with it, so the episode limit is the value to set (a "
                                  "feed-forward run warns once when an episode runs longer) (recurrent agents, "
                                  "return_reg only: G runs to the end of the sampled sequence, so only steps whose "
                                  "episode ends inside it are penalized: set algo.seq_len to the episode limit to "
                                  "cover every step)")


@dataclass
class QMIXConfig(VDNConfig):
    """QMIX (Rashid et al. 2018): as VDN, with a monotonic mixing network whose non-negative weights come
    from hypernetworks of the global state, so the agents' greedy actions are greedy for Q_tot."""

    name: Literal["qmix"] = _f("qmix", "algorithm name")
    mixer_embed: int = _f(32, "width of the mixing network's hidden layer")
    hypernet_layers: int = _f(2, "layers of the hypernetworks producing the mixing weights: 1 or 2")
    hypernet_embed: int = _f(64, "hidden width of two-layer hypernetworks")
    state: Literal["env", "obs"] = _f("env", "the mixer's global state: env = the env's state() where it has one "
                                             "(else obs); obs = every agent's observation concatenated")


def reads_env_state(cfg: Config) -> bool:
    """Whether the env's global ``state()`` is read each step: for a central critic, or a QMIX mixer
    conditioned on the env state (it can be costly: pistonball renders the screen for it)."""
    return cfg.model.critic == "central" or (isinstance(cfg.algo, QMIXConfig) and cfg.algo.state == "env")


@dataclass
class SACConfig(OffPolicyConfig):
    """Soft Actor-Critic (Haarnoja et al. 2018) with twin Q, automatic entropy tuning; tanh-Gaussian
    policy for Box groups, categorical policy with exact expectations for Discrete groups (Christodoulou 2019)."""

    name: Literal["sac"] = _f("sac", "algorithm name")
    autotune: bool = _f(True, "learn the entropy coefficient so the policy entropy tracks target_entropy")
    ent_coef: float = _f(1.0, "entropy coefficient alpha: the initial value when autotune, else fixed")
    target_entropy: float | None = _f(None, "entropy target in nats; "
                                            "null = -action_dim (Box) or target_entropy_scale*log(n) (Discrete)")
    target_entropy_scale: float = _f(0.89, "Discrete groups: target entropy as a fraction of "
                                           "the uniform policy's log(n)")


@dataclass
class TD3Config(OffPolicyConfig):
    """Twin Delayed DDPG (Fujimoto et al. 2018): deterministic actor, target policy smoothing, delayed
    actor and target updates; Box actions. Noise scales are fractions of the half-range of the action box."""

    name: Literal["td3"] = _f("td3", "algorithm name")
    lr: float = _f(1e-3, "Adam learning rate")
    target_update_interval: int = _f(2, "gradient steps between target updates")
    exploration_noise: float = _f(0.1, "std of the Gaussian noise added to actions while collecting")
    policy_noise: float = _f(0.2, "std of the target policy smoothing noise")
    noise_clip: float = _f(0.5, "target policy smoothing noise is clipped to [-noise_clip, noise_clip]")
    policy_delay: int = _f(2, "gradient steps between actor updates")


@dataclass
class EvalConfig:
    """Periodic deterministic evaluation on separate, separately seeded envs."""

    interval: int = _f(20_000, "env steps between evaluations; 0 = only at the end")
    episodes: int = _f(10, "episodes per evaluation")
    num_envs: int = _f(5, "eval env copies")
    deterministic: bool = _f(True, "mode of the action distribution instead of sampling")
    stochastic_check: bool = _f(True, "after the final deterministic evaluation, run its episodes again sampling "
                                      "actions; the end line reports both when they differ by 3+ standard errors")
    score_groups: list = _f([], "groups whose summed agent returns are the score that picks best.pt (competitive "
                                "games: e.g. [adversary]); empty = the team return of every agent")
    opponent: Literal["none", "random"] = _f("none", "random: the policy plays one seat, "
                                                     "every other agent acts randomly (win rate vs random)")


@dataclass
class CheckpointConfig:
    """When checkpoints are written."""

    interval: int = _f(50_000, "env steps between latest.pt writes (also at the end and on interrupt)")
    keep_last: int = _f(1, "also keep this many numbered checkpoints (step_<env_steps>.pt); 0 = none")


@dataclass
class LogConfig:
    """Console output and experiment trackers (TensorBoard, Weights & Biases, MLflow: docs/tracking.md)."""

    tensorboard: bool = _f(True, "write TensorBoard event files to the run directory "
                                 "(false drops tensorboard from backends)")
    progress: bool = _f(True, "live progress display when the terminal is a TTY")
    interval: int = _f(1, "iterations between console/tracker training logs")
    backends: list = _f(["tensorboard"], "experiment trackers: any of tensorboard, wandb (pip install 'marl[wandb]'), "
                                         "mlflow (pip install 'marl[mlflow]')")
    wandb_project: str = _f("marl", "W&B project")
    wandb_entity: str = _f("", "W&B entity (user or team); empty = your default entity")
    wandb_mode: Literal["offline", "online", "disabled"] = _f("offline", "W&B mode; offline writes RUN_DIR/wandb "
                                                                          "for a later `wandb sync`")
    wandb_tags: list = _f([], "W&B run tags")
    wandb_group: str = _f("", "W&B run group (marl tune sets the study name); empty = none")
    mlflow_uri: str = _f("", "MLflow tracking URI; "
                             "empty = sqlite:///RUN_DIR/mlflow.db (artifacts in RUN_DIR/mlartifacts)")
    mlflow_experiment: str = _f("marl", "MLflow experiment name (created when missing)")

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for every unusable value (the libraries themselves are checked at training time)."""
        valid = ("tensorboard", "wandb", "mlflow")
        bad = [b for b in self.backends if b not in valid]
        rules = [
            (not bad, "backends", f"unknown backend(s) {bad} (valid: {', '.join(valid)})"),
            (self.interval >= 1, "interval", "must be >= 1"),
            (all(isinstance(t, str) for t in self.wandb_tags), "wandb_tags", "must be a list of strings"),
        ]
        return [(key, msg) for ok, key, msg in rules if not ok]


@dataclass
class HealthConfig:
    """Numeric checks and the thresholds of the warning signs (a check = one PPO iteration, or
    ``log.interval`` off-policy training phases)."""

    enabled: bool = _f(True, "watch the training metrics and report warning signs")
    patience: int = _f(5, "consecutive checks a sign must persist before it is reported")
    entropy_floor_frac: float = _f(0.05, "entropy collapse: below this fraction of the first entropy "
                                         "(Gaussian policies: of the first action std)")
    entropy_abs_floor: float = _f(0.01, "entropy collapse: below this entropy in nats (categorical policies)")
    kl_high: float = _f(0.05, "approx KL above this: the update step is too large")
    clip_low: float = _f(0.005, "clip fraction below this: clipping has no effect")
    clip_high: float = _f(0.9, "clip fraction above this: nearly every sample is clipped")
    lr_quiet_frac: float = _f(0.5, "skip clip_fraction_low once train/lr has annealed below this fraction "
                                   "of its first value (small steps clip nothing)")
    ev_low: float = _f(0.0, "explained variance below this: the critic is worse than the mean return")
    ev_warmup: int = _f(10, "checks before explained variance is judged (a fresh critic starts near 0)")
    collapse_frac: float = _f(0.5, "returns collapse: smoothed return below "
                                   "best - collapse_frac * (best - first)")
    return_window: int = _f(10, "moving-average window of rollout/ep_return, in checks")
    return_min_rise: float = _f(3.0, "a rise (best - first) counts only above this many noise std "
                                     "of the returns")
    q_bound_factor: float = _f(2.0, "Q divergence: |train/q_mean| above this multiple of the largest possible "
                                     "return max|r| / (1 - gamma)")
    q_growth: float = _f(10.0, "Q divergence before any nonzero reward was seen: |train/q_mean| rising at each "
                               "of patience checks, to this multiple of where it started")
    ent_coef_floor_frac: float = _f(1e-3, "entropy coefficient collapse (SAC autotune): train/ent_coef below "
                                          "this fraction of its first value")
    check_inputs: bool = _f(False, "check every observation and reward for NaN/inf (one pass over each step)")

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for every value out of range; empty when the config is usable."""
        rules = [
            (self.patience >= 1, "patience", "must be >= 1"),
            (0 <= self.entropy_floor_frac < 1, "entropy_floor_frac", "must be in [0, 1)"),
            (self.kl_high > 0, "kl_high", "must be > 0"),
            (0 <= self.clip_low < self.clip_high <= 1, "clip_low", "need 0 <= clip_low < clip_high <= 1"),
            (0 <= self.lr_quiet_frac <= 1, "lr_quiet_frac", "must be in [0, 1]"),
            (self.ev_warmup >= 0, "ev_warmup", "must be >= 0"),
            (0 < self.collapse_frac <= 1, "collapse_frac", "must be in (0, 1]"),
            (self.return_window >= 1, "return_window", "must be >= 1"),
            (self.return_min_rise >= 0, "return_min_rise", "must be >= 0"),
            (self.q_bound_factor >= 1, "q_bound_factor", "must be >= 1"),
            (self.q_growth > 1, "q_growth", "must be > 1"),
            (0 < self.ent_coef_floor_frac < 1, "ent_coef_floor_frac", "must be in (0, 1)"),
        ]
        return [(key, f"{msg}, got {getattr(self, key)!r}") for ok, key, msg in rules if not ok]


@dataclass
class DistributedConfig:
    """Data-parallel ranks under torchrun (marl.distributed); ignored by a plain ``marl train``."""

    timeout_s: float = _f(300.0, "seconds a collective waits for the other ranks before the job stops with an error; "
                                 "above rank 0's longest evaluation (the others wait for it)")
    check_interval: int = _f(50, "compare a parameter checksum across ranks every this many updates; 0 = never")
    preempt_fraction: float = _f(0.0, "PPO: end every rank's rollout once this fraction of the ranks has collected "
                                      "all algo.num_steps steps (DD-PPO's straggler preemption); 0 = off")
    preempt_min_steps: float = _f(0.25, "a preempted rollout still holds at least this fraction of algo.num_steps")
    sync_interval: int = _f(16, "dqn/sac/td3: vector steps between the collectives that sum every rank's agent-step "
                                "and episode counters, merge the observation statistics and agree on a stop signal "
                                "(env steps need none); 1 = every step")

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for every value out of range; empty when the config is usable."""
        rules = [(self.timeout_s > 0, "timeout_s", "must be > 0"),
                 (self.check_interval >= 0, "check_interval", "must be >= 0"),
                 (0 <= self.preempt_fraction <= 1, "preempt_fraction", "must be in [0, 1] (0 = off)"),
                 (0 < self.preempt_min_steps <= 1, "preempt_min_steps", "must be in (0, 1]"),
                 (self.sync_interval >= 1, "sync_interval", "must be >= 1 (1 = every vector step)")]
        return [(key, f"{msg}, got {getattr(self, key)!r}") for ok, key, msg in rules if not ok]


@dataclass
class RayConfig:
    """Rollout workers on a Ray cluster (``runtime=ray``; marl.env.ray_env, docs/distributed.md).

    ``env.num_envs`` is always the number of env copies E; ``num_workers`` and ``envs_per_worker``
    split them (give one, the other is derived; both given, their product must be E).
    """

    address: str = _f("", "empty = start a local Ray instance for the run (stopped at its end); auto, host:port "
                          "or ray://host:port = join that running cluster (left running)")
    mode: Literal["sync", "async"] = _f("sync", "sync: every env copy steps once per vector step, actions from "
                                                "the learner's current policy; asynchronous collection is "
                                                "algo.name=appo (its workers are Ray actors under runtime=ray); "
                                                "async is reserved")
    num_workers: int = _f(2, "rollout workers (Ray actors), each stepping a contiguous chunk of the env copies; "
                             "0 = env.num_envs / ray.envs_per_worker")
    envs_per_worker: int = _f(0, "env copies per worker; 0 = env.num_envs / ray.num_workers (must divide)")
    cpus_per_worker: float = _f(1.0, "CPUs each worker reserves from Ray's scheduler (fractions allowed)")
    max_restarts: int = _f(3, "times each worker is rebuilt after its process or node died; then the run stops")
    connect_timeout_s: float = _f(10.0, "seconds to reach ray.address before the run stops with an error")
    start_timeout_s: float = _f(120.0, "seconds a (re)started worker may take to be placed and build its env "
                                       "copies (a cluster without free CPUs never places it)")

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for every value out of range (the split of env copies is checked with the env)."""
        rules = [
            (self.mode == "sync", "mode", "only sync is available in this version; use ray.mode=sync"),
            (self.num_workers >= 0, "num_workers", "must be >= 0 (0 = derived from ray.envs_per_worker)"),
            (self.envs_per_worker >= 0, "envs_per_worker", "must be >= 0 (0 = derived from ray.num_workers)"),
            (self.num_workers > 0 or self.envs_per_worker > 0, "num_workers",
             "give ray.num_workers or ray.envs_per_worker (both are 0)"),
            (self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0"),
            (self.max_restarts >= 0, "max_restarts", "must be >= 0"),
            (self.connect_timeout_s > 0, "connect_timeout_s", "must be > 0"),
            (self.start_timeout_s > 0, "start_timeout_s", "must be > 0"),
        ]
        return [(key, f"{msg}, got {getattr(self, key)!r}") for ok, key, msg in rules if not ok]


@dataclass
class Config:
    """One experiment. ``total_env_steps`` counts vectorized env steps summed over env copies."""

    seed: int = _f(0, "seed of every RNG (python, numpy, torch, env copies)")
    total_env_steps: int = _f(400_000, "training budget in env steps summed over env copies "
                                       "(agent decisions with action_repeat)")
    run_dir: str = _f("", "output folder; empty = runs/<env>-<algo>-seed<seed>-<time>")
    resume: str = _f("", "run directory or checkpoint to continue from")
    runtime: Literal["local", "ray"] = _f("local", "local: env copies on this machine (env.backend); ray: on Ray "
                                                   "rollout workers (the ray section; pip install 'marl[ray]')")
    device: Literal["cpu", "cuda", "auto"] = _f("cpu", "torch device")
    torch_threads: int = _f(1, "torch intra-op threads (1 is fastest for small networks); 0 = torch default")
    update_threads: int = _f(-1, "PPO: torch threads during the update; "
                                 "-1 = auto: one per env worker process (at most 4) "
                                 "only when the CPUs this process may use exceed workers + 1, else torch_threads")
    env: EnvConfig = _f(None, "environment")
    algo: Any = _f(None, "algorithm section; algo.name selects the schema")
    model: ModelConfig = _f(None, "networks")
    norm: NormConfig = _f(None, "normalization")
    eval: EvalConfig = _f(None, "evaluation")
    checkpoint: CheckpointConfig = _f(None, "checkpoints")
    log: LogConfig = _f(None, "logging")
    health: HealthConfig = _f(None, "training health: non-finite checks and warning signs")
    distributed: DistributedConfig = _f(None, "data-parallel ranks under torchrun")
    ray: RayConfig = _f(None, "rollout workers on a Ray cluster (runtime=ray)")

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if getattr(self, name) is None:
                setattr(self, name, cls())
        if self.algo is None:
            self.algo = PPOConfig()

    @property
    def batch_size(self) -> int:
        """Rollout rows per update: ``algo.num_steps * env.num_envs``."""
        return self.algo.num_steps * self.env.num_envs

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.algo.num_minibatches

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_env_steps // self.batch_size)


SECTIONS: dict[str, type] = {
    "env": EnvConfig,
    "model": ModelConfig,
    "norm": NormConfig,
    "eval": EvalConfig,
    "checkpoint": CheckpointConfig,
    "log": LogConfig,
    "health": HealthConfig,
    "distributed": DistributedConfig,
    "ray": RayConfig,
}

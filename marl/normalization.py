"""Running statistics and the normalizers built on them.

* :class:`RunningMeanStd` keeps mean and variance in float64 and merges batches with
  the parallel formula of Chan et al. (1979), so that feeding data in chunks gives
  the same statistics as feeding it at once.
* :class:`ObsNormalizer` standardizes observations ``(x - mean) / sqrt(var + eps)``
  and clips the result to ``[-clip, clip]``.
* :class:`RewardScaler` divides rewards by the running standard deviation of the
  discounted return ``G_t = γ G_{t-1} + r_t`` (no mean subtraction, which would
  change the task), one running return per env copy and agent.

Every normalizer has ``training``: statistics update only while it is ``True``;
evaluation uses frozen statistics. ``state_dict``/``load_state_dict`` hold plain
tensors so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def batch_moments(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) variance over the first axis of ``x [N, *shape]``, float64 numpy arrays ``[*shape]``.

    A tensor is reduced where it lives (float64) and only its two ``[*shape]`` moments come to the host (as
    lists: the rows themselves are never converted to numpy).
    """
    if isinstance(x, torch.Tensor):
        x = x.to(torch.float64)
        return (np.asarray(x.mean(0).tolist(), np.float64).reshape(x.shape[1:]),
                np.asarray(x.var(0, unbiased=False).tolist(), np.float64).reshape(x.shape[1:]))
    x = np.asarray(x, np.float64)
    return x.mean(axis=0), x.var(axis=0)


class RunningMeanStd:
    """Mean and variance of a stream of arrays shaped ``[N, *shape]``.

    Args:
        shape: the shape of one sample.
        epsilon: initial pseudo-count, so the first update is not divided by 0.
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = float(epsilon)
        self.sync: Callable[[np.ndarray, np.ndarray, float], list[tuple[np.ndarray, np.ndarray, float]]] | None = None
        """Data-parallel runs: maps this process's batch moments ``(mean, var, count)`` to every
        rank's, in rank order (:meth:`marl.distributed.Ranks.gather_moments`); ``None`` = one process."""
        self.deferred = False
        """With :attr:`sync`: fold batches in locally and merge every rank's at :meth:`flush` only (no collective
        per update, so ranks do not step in lockstep: DD-PPO's preemption needs that)."""
        self._base: tuple[np.ndarray, np.ndarray, float] | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray, float]] = []

    def update(self, x: np.ndarray | torch.Tensor) -> None:
        """Fold a batch ``[N, *shape]`` (numpy or a tensor, :func:`batch_moments`) into the statistics (no-op for
        ``N == 0``).

        With :attr:`sync` set, every rank's batch is merged, in rank order, so all ranks hold
        the statistics of the union of their batches (the call is then a collective: every rank
        makes it, even with ``N == 0``).
        """
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x, np.float64)
        n = x.shape[0]
        if self.sync is not None and self.deferred:
            if self._base is None:
                self._base = (self.mean.copy(), self.var.copy(), self.count)
            if n:
                moments = (*batch_moments(x), float(n))
                self._pending.append(moments)
                self.merge(*moments)
            return
        if self.sync is not None:
            zeros = np.zeros(self.mean.shape, np.float64)
            moments = (*batch_moments(x), n) if n else (zeros, zeros, 0)
            for mean, var, count in self.sync(*moments):
                if count > 0:
                    self.merge(mean, var, count)
            return
        if n == 0:
            return
        self.merge(*batch_moments(x), n)

    def flush(self) -> None:
        """Deferred data-parallel statistics (:attr:`deferred`): merge every rank's batches since the last flush,
        in rank order, onto the statistics all ranks held then; every rank ends with the same numbers (a
        collective). A no-op otherwise."""
        if self.sync is None or not self.deferred:
            return
        base = self._base if self._base is not None else (self.mean.copy(), self.var.copy(), self.count)
        mine = RunningMeanStd(self.mean.shape, epsilon=0.0)
        for moments in self._pending:
            mine.merge(*moments)
        zeros = np.zeros(self.mean.shape, np.float64)
        gathered = self.sync(mine.mean if mine.count else zeros, mine.var if mine.count else zeros, mine.count)
        self.mean, self.var, self.count = base[0].copy(), base[1].copy(), base[2]
        for mean, var, count in gathered:
            if count > 0:
                self.merge(mean, var, count)
        self._base, self._pending = (self.mean.copy(), self.var.copy(), self.count), []

    def merge(self, mean: np.ndarray, var: np.ndarray, count: float) -> None:
        """Combine with the statistics of another sample (Chan et al. parallel update)."""
        delta = mean - self.mean
        total = self.count + count
        new_mean = self.mean + delta * count / total
        m2 = self.var * self.count + var * count + delta**2 * self.count * count / total
        self.mean, self.var, self.count = new_mean, m2 / total, total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "mean": torch.from_numpy(np.array(self.mean, np.float64)),
            "var": torch.from_numpy(np.array(self.var, np.float64)),
            "count": torch.tensor(self.count, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        mean = state["mean"].numpy()
        if mean.shape != self.mean.shape:
            raise ValueError(f"normalizer shape mismatch: checkpoint {mean.shape}, model {self.mean.shape}")
        self.mean = mean.astype(np.float64).copy()
        self.var = state["var"].numpy().astype(np.float64).copy()
        self.count = float(state["count"])
        self._base, self._pending = None, []


class ObsNormalizer:
    """Standardize observations with running statistics, then clip.

    Args:
        shape: one agent's observation shape.
        clip: bound of the normalized values (``[-clip, clip]``).
        epsilon: added to the variance before the square root.
    """

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, epsilon: float = 1e-8) -> None:
        self.rms = RunningMeanStd(shape)
        self.clip = clip
        self.epsilon = epsilon
        self.training = True

    def __call__(self, obs: np.ndarray, alive: np.ndarray | None = None) -> np.ndarray:
        """Normalize ``obs [..., *shape]``; while training, first update with the rows where ``alive``.

        Dead agents' zero observations never enter the statistics.
        """
        if self.training:
            rows = obs.reshape(-1, *self.rms.mean.shape)
            if alive is not None:
                rows = rows[alive.reshape(-1)]
            self.rms.update(rows)
        return self.normalize(obs)

    def normalize(self, obs: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalize without updating (any mode); a tensor stays a tensor on its device (same float64 arithmetic)."""
        std = np.sqrt(self.rms.var + self.epsilon)
        if isinstance(obs, torch.Tensor):
            mean = torch.as_tensor(self.rms.mean, device=obs.device)
            out = (obs.to(torch.float64) - mean) / torch.as_tensor(std, device=obs.device)
            return out.clamp_(-self.clip, self.clip).to(torch.float32)
        out = (obs - self.rms.mean) / std
        return np.clip(out, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.rms.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.rms.load_state_dict(state)


class RewardScaler:
    """Scale rewards by the running std of the discounted return; optional clip.

    Args:
        shape: shape of one step's reward array, e.g. ``(E, A)``: one running return each.
        gamma: discount of the running return (use the algorithm's γ).
        clip: bound of the scaled reward, ``None`` for no clipping.
        epsilon: added to the variance before the square root.
    """

    def __init__(self, shape: tuple[int, ...], gamma: float, clip: float | None = 10.0, epsilon: float = 1e-8) -> None:
        self.rms = RunningMeanStd(())
        self.ret = np.zeros(shape, np.float64)
        self.gamma = gamma
        self.clip = clip
        self.epsilon = epsilon
        self.training = True

    def __call__(
        self, reward: np.ndarray, done: np.ndarray, alive: np.ndarray | None = None, index: slice = slice(None)
    ) -> np.ndarray:
        """Scale one step's ``reward`` of the env copies ``index`` (default all).

        ``done`` resets those copies' running returns after the step; entries where
        ``alive`` is False do not enter the statistics.
        """
        if isinstance(reward, torch.Tensor) and not isinstance(self.ret, torch.Tensor):
            self.ret = torch.as_tensor(self.ret, device=reward.device)  # torch-native env: the running returns too
        if self.training:
            ret = self.ret[index] * self.gamma + reward
            rows = ret if alive is None else ret[alive]
            self.rms.update(rows.reshape(-1))
            if isinstance(ret, torch.Tensor):
                self.ret[index] = torch.where(done, 0.0, ret)
            else:
                self.ret[index] = np.where(done, 0.0, ret)
        return self.scale(reward)

    def scale(self, reward: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        std = np.sqrt(self.rms.var + self.epsilon)
        if isinstance(reward, torch.Tensor):  # float64 as numpy computes it (a float64 scalar divides float32)
            out = reward.to(torch.float64) / float(std)
            return (out if self.clip is None else out.clamp_(-self.clip, self.clip)).to(torch.float32)
        out = reward / std
        if self.clip is not None:
            out = np.clip(out, -self.clip, self.clip)
        return out.astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.rms.state_dict(), "ret": torch.as_tensor(self.ret).detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.rms.load_state_dict(state)
        self.ret = state["ret"].numpy().astype(np.float64).copy()


def normalize_advantage(adv: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Standardize advantages over the rows where ``mask`` (one minibatch)."""
    m = mask.float()
    n = m.sum().clamp_min(1.0)
    mean = (adv * m).sum() / n
    var = (((adv - mean) ** 2) * m).sum() / (n - 1).clamp_min(1.0)
    return (adv - mean) / (var.sqrt() + eps)

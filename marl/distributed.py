"""Data-parallel learners on ``torch.distributed``: one run, ``N`` ranks, launched by torchrun.

``torchrun --nproc-per-node=N -m marl train CONFIG`` runs one training run as ``N`` processes
(ranks). :meth:`Ranks.from_env` sees the variables torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and joins the process group: ``gloo`` on the
CPU, ``nccl`` on CUDA (then with a second, ``gloo`` group for the small CPU-side collectives).
Without torchrun, or with one rank, there is no :class:`Ranks` and nothing below runs: a plain
``marl train`` is unchanged, bit for bit.

What each rank does (the design; docs/distributed.md has the long form):

* **Data.** ``env.num_envs = E`` counts the run's env copies over all ranks; rank ``r`` runs
  copies ``r*E/N .. (r+1)*E/N - 1`` with those copies' seeds of the single-process stream
  (:meth:`Ranks.env_copies`), so every copy's seed is disjoint from every other rank's and
  ``N`` ranks see the same env seeds as one process with ``E`` copies. A rollout and an
  update have the same size whatever ``N``; resuming with another ``N`` redistributes copies.
* **Gradients.** Each rank computes the loss of its own rows; :meth:`Ranks.average_grads`
  averages the flat gradient buffers (:class:`marl.algos.optim.FlatAdam`) with ONE all-reduce
  per optimizer step, before clipping. Every rank then clips the same gradient and takes the
  same Adam step, so the parameters stay identical (checked by :meth:`Ranks.check_in_sync`).
* **Normalizers.** Each :class:`marl.normalization.RunningMeanStd` update all-gathers every
  rank's batch moments ``(mean, var, count)`` and merges them in rank order with the parallel
  formula (:meth:`Ranks.gather_moments`): every rank holds the same statistics, equal to one
  update with the union of the rows.
* **Counters** (``env_steps``, ``agent_steps``, ``episodes``) are summed over ranks each
  iteration (:meth:`Ranks.sum_ints`); a stop signal at any rank stops all at the same iteration
  (:meth:`Ranks.any_`).
* **Rank 0** alone logs, evaluates (the result is broadcast) and writes checkpoints; a
  checkpoint holds the env snapshots and running returns of every rank's copies (gathered),
  and every rank resumes from it.

Failure: the process group has a timeout (``distributed.timeout_s``); a rank that dies closes
its sockets, so its peers' next collective raises at once (gloo) or at the timeout, and torchrun
stops the other ranks. Nothing is saved on that path: the last checkpoint stays as it was.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class DivergenceError(RuntimeError):
    """Ranks hold different parameters: data-parallel training would go on training N different models."""


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process with more than one rank."""
    return all(v in os.environ for v in TORCHRUN_VARS) and int(os.environ["WORLD_SIZE"]) > 1


class SilentLogger:
    """What ranks other than 0 log with: nothing (same methods as :class:`marl.logger.Logger`)."""

    def scalars(self, metrics: dict[str, float], env_steps: int) -> None: ...

    def text(self, tag: str, text: str, env_steps: int = 0) -> None: ...

    def hparams(self, flat_config: dict[str, Any], metrics: dict[str, float]) -> None: ...

    def status(self, env_steps: int, line: str) -> None: ...

    def message(self, line: str) -> None: ...

    def close(self) -> None: ...


LEFT_KEY = "marl/left_process_group"
"""Store key prefix by which ranks 1.. tell rank 0 they have left the process group."""


def leave_in_turn(rank: int, world_size: int, timeout_s: float = 60.0) -> None:
    """Leave the process group in turn after the last collective: ranks 1.. first, then rank 0 once each has
    said so through the run's key-value store (torchrun's, outside the group's connections), or after
    ``timeout_s``. A rank that tears its connections down while a peer is still reading the last collective's
    bytes makes gloo abort the peer ("terminate called without an active exception"); this way a rank only
    closes towards peers that have nothing in flight."""
    store = dist.distributed_c10d._get_default_store()
    if rank != 0:
        dist.destroy_process_group()
        try:
            store.set(f"{LEFT_KEY}/{rank}", "1")
        except RuntimeError:  # rank 0 is gone already: nothing left to protect
            pass
        return
    try:
        store.wait([f"{LEFT_KEY}/{r}" for r in range(1, world_size)], timedelta(seconds=timeout_s))
    except RuntimeError:  # a peer never said so (it died): leave anyway
        pass
    dist.destroy_process_group()


class Ranks:
    """This process's place in a data-parallel run, and the collectives the run uses.

    Args:
        rank, world_size: this rank and the number of ranks.
        device: the device of the networks (``cuda:LOCAL_RANK`` with NCCL).
        cpu_group: the process group of CPU tensors (``None`` = the default group, gloo).

    Every method is a collective: all ranks call it, in the same order, or the run hangs until
    the process group's timeout.
    """

    def __init__(self, rank: int, world_size: int, device: torch.device, cpu_group: Any = None) -> None:
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.cpu_group = cpu_group

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str, timeout_s: float) -> Ranks | None:
        """Join the process group torchrun set up; ``None`` when not launched by torchrun (or one rank).

        Args:
            device: the config's ``device`` (``cpu``, ``cuda`` or ``auto``): CUDA takes NCCL and
                ``cuda:LOCAL_RANK``, the CPU gloo.
            timeout_s: seconds a collective waits for its peers before it raises.
        """
        if not launched_by_torchrun():
            return None
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        timeout = timedelta(seconds=timeout_s)
        if use_cuda:
            local = int(os.environ["LOCAL_RANK"])
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
        cpu_group = dist.new_group(backend="gloo", timeout=timeout) if use_cuda else None
        return cls(dist.get_rank(), dist.get_world_size(), dev, cpu_group)

    def close(self, settled: bool = False) -> None:
        """Leave the process group (after the last collective).

        Args:
            settled: every rank got here the same way (the run's end, or an agreed stop): they meet once more
                first, so that no rank tears its connections down while a peer is still finishing the last
                collective (gloo then aborts the peer's process). ``False`` on an error: no rank waits.
        """
        if not dist.is_initialized():
            return
        if not settled:
            dist.destroy_process_group()
            return
        dist.barrier(group=self.cpu_group)
        leave_in_turn(self.rank, self.world_size)

    # ------------------------------------------------------------------ data
    def env_copies(self, num_envs: int) -> range:
        """The run's env copies that this rank runs: a contiguous ``num_envs / world_size`` of them.

        Raises:
            ValueError: ``num_envs`` is not a multiple of the number of ranks.
        """
        if num_envs % self.world_size:
            raise ValueError(f"env.num_envs={num_envs} counts the env copies of all ranks and must be a multiple "
                             f"of the number of ranks ({self.world_size})")
        per = num_envs // self.world_size
        return range(self.rank * per, (self.rank + 1) * per)

    # ------------------------------------------------------------------ collectives
    def average_grads(self, grads: Sequence[Tensor], extra: Tensor | None = None) -> Tensor | None:
        """Average ``grads`` (flat gradient buffers, in place) over ranks with ONE all-reduce.

        One buffer is reduced in place; several (one optimizer per group), or one plus ``extra``
        (per-step scalars every rank must agree on, e.g. the approx KL of ``algo.target_kl``),
        are packed into one tensor first. Returns the averaged ``extra`` (``None`` without one).
        """
        if len(grads) == 1 and extra is None:
            dist.all_reduce(grads[0], op=dist.ReduceOp.SUM)
            grads[0].div_(self.world_size)
            return None
        parts = [*grads, *([] if extra is None else [extra.detach().to(grads[0].device, grads[0].dtype)])]
        packed = torch.cat([p.reshape(-1) for p in parts])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        packed.div_(self.world_size)
        offset = 0
        for g in grads:
            g.copy_(packed[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return None if extra is None else packed[offset:].view_as(extra).to(extra.dtype)

    def gather_moments(self, mean: np.ndarray, var: np.ndarray,
                       count: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Every rank's ``(mean, var, count)`` of one batch, in rank order (one all-gather, float64)."""
        mean = np.asarray(mean, np.float64)
        var = np.asarray(var, np.float64)
        row = torch.from_numpy(np.concatenate([[float(count)], mean.reshape(-1), var.reshape(-1)]))
        out = [torch.empty_like(row) for _ in range(self.world_size)]
        dist.all_gather(out, row, group=self.cpu_group)
        k = mean.size
        return [(r[1:1 + k].numpy().reshape(mean.shape), r[1 + k:].numpy().reshape(mean.shape), float(r[0]))
                for r in out]

    def sum_ints(self, values: Sequence[int]) -> list[int]:
        """Element-wise sums over ranks (e.g. this iteration's env steps, agent steps, episodes)."""
        t = torch.tensor(list(values), dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.cpu_group)
        return [int(v) for v in t]

    def any_(self, flag: bool) -> bool:
        """Whether ``flag`` is true at any rank (every rank gets the same answer)."""
        return self.sum_ints([int(flag)])[0] > 0

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.cpu_group)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]

    # ------------------------------------------------------------------ divergence check
    def finish_line(self) -> FinishLine:
        """A :class:`FinishLine` shared by every rank (rank 0 serves its store on a free port; a collective)."""
        port = 0
        if self.is_main:
            with socket.socket() as sock:
                sock.bind(("", 0))
                port = sock.getsockname()[1]
        port = self.broadcast_object(port)
        host = os.environ.get("MASTER_ADDR", "127.0.0.1")
        return FinishLine(dist.TCPStore(host, port, self.world_size, self.is_main, wait_for_workers=False))

    def check_in_sync(self, named_params: Iterable[tuple[str, Tensor]]) -> None:
        """Compare a checksum of every parameter across ranks; raise naming the first that differs.

        The checksum of a tensor is the sum of its bytes read as int32 words (an integer sum:
        exact and independent of the reduction order, so equal tensors give equal sums on any
        rank, and a one-ulp change of one element changes it). One all-gather of ``[n_tensors]``.

        Raises:
            DivergenceError: on every rank, naming the first tensor (in ``named_params`` order)
                and the ranks whose copy differs from rank 0's.
        """
        names, sums = [], []
        with torch.no_grad():
            for name, p in named_params:
                words = p.detach().contiguous().reshape(-1).view(torch.uint8)
                pad = (-words.numel()) % 4
                if pad:
                    words = torch.cat([words, words.new_zeros(pad)])
                sums.append(words.view(torch.int32).to(torch.int64).sum().cpu())
                names.append(name)
        local = torch.stack(sums)
        out = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(out, local, group=self.cpu_group)
        table = torch.stack(out)  # [ranks, tensors]
        differs = (table != table[0]).any(0)
        if bool(differs.any()):
            i = int(differs.nonzero()[0])
            ranks = [r for r in range(self.world_size) if table[r, i] != table[0, i]]
            raise DivergenceError(
                f"ranks diverged: parameter {names[i]!r} differs from rank 0's on rank(s) {ranks} "
                f"({int(differs.sum())} of {len(names)} tensors differ). Data-parallel ranks must take identical "
                "steps: something updated parameters outside the averaged optimizer step (a rank-local change, "
                "a nondeterministic kernel, or a load on one rank only). Resume from the last checkpoint.")


def rank_seed(seed: int, rank: int, env_steps: int) -> int:
    """The seed of rank ``rank``'s own RNGs (action sampling) from ``env_steps`` on: distinct per rank and per
    resume, so ranks > 0 never repeat rank 0's action noise (rank 0 keeps the run's own RNG stream)."""
    return int(np.random.SeedSequence([seed, rank, env_steps]).generate_state(1)[0])


class FinishLine:
    """How many ranks have finished the rollout of each iteration: a counter per iteration in a key-value store
    that every rank reads without waiting for the others (DD-PPO's preemption; ``distributed.preempt_fraction``).

    Args:
        store: a store every rank reaches (:meth:`Ranks.finish_line` makes one).
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def arrive(self, iteration: int) -> None:
        """This rank collected its whole rollout of ``iteration``."""
        self.store.add(f"done/{iteration}", 1)

    def count(self, iteration: int) -> int:
        """Ranks that have finished the rollout of ``iteration`` so far."""
        return int(self.store.add(f"done/{iteration}", 0))

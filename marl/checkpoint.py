"""Checkpoint files: atomic writes and safe, checked loading.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it
loads with ``torch.load(weights_only=True)``; nothing in it is unpickled as
arbitrary objects. Writes go to a temporary file in the same folder, are fsynced,
then ``os.replace``-d over the target, so a crash mid-write leaves the previous
checkpoint intact. Stale temporary files are removed by :func:`clean_stale`.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

FORMAT_VERSION = 1
TMP_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and what to do."""


def save(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    payload = {"format_version": FORMAT_VERSION, **payload}
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def clean_stale(folder: str | Path) -> list[Path]:
    """Remove temporary files left by interrupted writes; return what was removed."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.glob(f".*{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def load(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raise :class:`CheckpointError` with the reason.

    Refused: a missing file, a truncated or corrupt file, a file carrying pickled
    objects (only tensors and plain data are accepted, so a malicious payload never
    runs), and a newer format version than this code understands. ``mmap``: the tensors
    stay in the file, mapped (a check of a large checkpoint without reading its replay).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the file holds objects other than tensors and plain data "
            f"(only weights_only checkpoints are loaded, for safety). Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint (truncated or corrupt: {exc}). "
            "Use another checkpoint of the run (checkpoints/latest.pt, best.pt, step_*.pt)."
        ) from exc
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path}: not a marl checkpoint (no format_version)")
    version = payload["format_version"]
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this marl understands ({FORMAT_VERSION}); upgrade marl"
        )
    return payload


def to_checkpoint(x: Any) -> Any:
    """``x`` as data a ``weights_only`` load accepts: numpy arrays -> tensors, tuples -> lists, recursively
    through dicts and lists. The one converter every checkpoint entry goes through (RNG states, env
    snapshots, replays); :func:`from_checkpoint` is its inverse."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, dict):
        return {k: to_checkpoint(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_checkpoint(v) for v in x]
    return x


def from_checkpoint(x: Any, tuples: bool = False) -> Any:
    """Inverse of :func:`to_checkpoint`: tensors -> numpy arrays (CPU), recursively; lists -> tuples when
    ``tuples`` (Python's ``random.setstate`` needs them)."""
    if isinstance(x, torch.Tensor):
        return x.cpu().numpy()
    if isinstance(x, dict):
        return {k: from_checkpoint(v, tuples) for k, v in x.items()}
    if isinstance(x, list):
        items = [from_checkpoint(v, tuples) for v in x]
        return tuple(items) if tuples else items
    return x


def rng_state() -> dict[str, Any]:
    """Python, numpy (legacy global) and torch RNG states as plain data / tensors."""
    return {
        "python": to_checkpoint(random.getstate()),
        "numpy": to_checkpoint(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(from_checkpoint(state["python"], tuples=True))
    np.random.set_state(from_checkpoint(state["numpy"]))
    torch.set_rng_state(state["torch"])


def generator_state(rng: np.random.Generator) -> dict:
    """A numpy Generator's state for a checkpoint (``rng.bit_generator.state = ...`` restores it)."""
    return to_checkpoint(rng.bit_generator.state)


CheckpointPreference = Literal["latest", "best"]


def find_checkpoint(path: str | Path, prefer: CheckpointPreference) -> Path:
    """The checkpoint a path means: a file is itself; a run directory is its ``checkpoints/<prefer>.pt``,
    else the other of ``latest.pt`` / ``best.pt``.

    Resuming prefers ``latest`` (continue where the run stopped); evaluating, recording and loading a
    policy prefer ``best`` (the best evaluation so far).

    Raises:
        CheckpointError: no such file or directory, or a run directory without either checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        order = ("latest.pt", "best.pt") if prefer == "latest" else ("best.pt", "latest.pt")
        for folder in (p / "checkpoints", p):
            for name in order:
                if (folder / name).is_file():
                    return folder / name
        raise CheckpointError(f"{p}: no checkpoints/{order[0]} or {order[1]} in this run directory")
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file or run directory")
    return p

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
from typing import Any

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


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raise :class:`CheckpointError` with the reason.

    Refused: a missing file, a truncated or corrupt file, a file carrying pickled
    objects (only tensors and plain data are accepted, so a malicious payload never
    runs), and a newer format version than this code understands.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the file holds objects other than tensors and plain data "
            f"(only weights_only checkpoints are loaded, for safety). Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
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


def rng_state() -> dict[str, Any]:
    """Python, numpy (legacy global) and torch RNG states as plain data / tensors."""
    return {
        "python": list(_listify(random.getstate())),
        "numpy": _listify(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def generator_state(rng: np.random.Generator) -> dict:
    return _listify(rng.bit_generator.state)


def _listify(x: Any) -> Any:
    if isinstance(x, tuple):
        return [_listify(v) for v in x]
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def _tuplify(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_tuplify(v) for v in x)
    return x

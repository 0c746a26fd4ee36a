"""Fixed-seed fingerprints of short training runs, one per algorithm and multi-agent shape.

Each case trains a few thousand env steps from a shipped config (sync backend, one torch
thread, evaluation and periodic checkpoints off) and prints the SHA-256 of everything the
final ``latest.pt`` holds that training decides: the acting policy, the learner (networks,
targets, optimizer state), the counters and the RNG states. Two versions of the code train
identically on a case when their digests are equal; a refactoring that claims "no change of
behaviour" shows it by printing the same table before and after::

    python bench/fingerprints.py                # all cases, one line each
    python bench/fingerprints.py --json out.json
    python bench/fingerprints.py --check out.json   # exit 1 on any difference

The digest hashes tensors by dtype, shape and bytes, in sorted key order, so it does not
depend on pickling details or on where a module keeps its code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMON = ["env.backend=sync", "torch_threads=1", "eval.interval=0", "checkpoint.interval=0",
          "log.tensorboard=false", "log.progress=false", "eval.episodes=2", "eval.num_envs=1"]

# name -> (config file, overrides)
CASES: dict[str, tuple[str, list[str]]] = {
    "ppo_shared": ("configs/simple_spread_ppo.yaml", ["total_env_steps=2048", "env.num_envs=4", "algo.num_steps=128"]),
    "ppo_independent": ("configs/simple_spread_ppo.yaml",
                        ["total_env_steps=2048", "env.num_envs=4", "algo.num_steps=128", "model.sharing=independent"]),
    "ppo_central": ("configs/simple_spread_ppo.yaml",
                    ["total_env_steps=2048", "env.num_envs=4", "algo.num_steps=128", "model.critic=central"]),
    "ppo_groups_adversary": ("configs/simple_adversary_ppo.yaml",
                             ["total_env_steps=2048", "env.num_envs=4", "algo.num_steps=128"]),
    "ppo_subprocess_overlap": ("configs/simple_spread_ppo.yaml",
                               ["total_env_steps=2048", "env.num_envs=4", "algo.num_steps=128",
                                "env.backend=subprocess", "env.num_workers=2", "env.overlap=true"]),
    "ppo_aec": ("configs/tictactoe_ppo.yaml", ["total_env_steps=2048", "env.num_envs=4", "algo.num_steps=64"]),
    "ppo_cartpole": ("configs/cartpole_ppo.yaml", ["total_env_steps=4096", "env.num_envs=4"]),
    "dqn": ("configs/cartpole_dqn.yaml", ["total_env_steps=3000", "algo.learning_starts=500"]),
    "dqn_per_nstep": ("configs/spread_dqn.yaml",
                      ["total_env_steps=3000", "algo.learning_starts=800", "algo.per=true", "algo.n_step=3",
                       "algo.batch_size=64", "algo.buffer_size=4000"]),
    "sac": ("configs/pendulum_sac.yaml", ["total_env_steps=800", "algo.learning_starts=200", "algo.batch_size=64"]),
    "td3": ("configs/pendulum_td3.yaml", ["total_env_steps=800", "algo.learning_starts=200", "algo.batch_size=64"]),
    "dqn_her": ("configs/bitflip_dqn_her.yaml",
                ["total_env_steps=3200", "env.kwargs.n_bits=8", "algo.learning_starts=320", "algo.batch_size=32"]),
}


def digest(x: Any, h: "hashlib._Hash") -> None:
    """Feed ``x`` (nested dicts / lists / tuples / tensors / arrays / scalars) into ``h`` by value.

    Floating tensors are hashed by dtype, shape and bytes; integer and boolean arrays (RNG
    states) and sequences by their values, so a state stored as a list of ints, a tuple or an
    integer array hashes the same: the digest follows what training decided, not the storage.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        h.update(f"F{x.dtype}{x.shape}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    elif isinstance(x, np.ndarray):
        digest(x.tolist(), h)
    elif isinstance(x, dict):
        for k in sorted(x, key=str):
            h.update(f"K{k}".encode())
            digest(x[k], h)
    elif isinstance(x, (list, tuple)):
        h.update(f"L{len(x)}".encode())
        for v in x:
            digest(v, h)
    else:
        h.update(repr(x).encode())


def fingerprint(config: str, overrides: list[str]) -> dict[str, str]:
    """Train one case; digests of the trained parts of its final checkpoint."""
    from marl import checkpoint as ckpt
    from marl.api import train
    from marl.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / config, [*COMMON, *overrides, f"run_dir={tmp}/run"])
        train(cfg)
        state = ckpt.load(Path(tmp) / "run" / "checkpoints" / "latest.pt")
    out = {}
    for part in ("policy", "learner", "counters", "rng"):
        h = hashlib.sha256()
        value = state[part]
        if part == "counters":
            value = {k: v for k, v in value.items() if k != "wall_time_s"}
        digest(value, h)
        out[part] = h.hexdigest()[:16]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="*", default=list(CASES), help="cases to run (default: all)")
    p.add_argument("--json", default="", help="write the digests to this file")
    p.add_argument("--check", default="", help="compare with the digests in this file; exit 1 on a difference")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name in args.cases:
        config, overrides = CASES[name]
        results[name] = fingerprint(config, overrides)
        print(f"{name:22s} " + "  ".join(f"{k}={v}" for k, v in results[name].items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.check:
        expected = json.loads(Path(args.check).read_text())
        bad = [n for n in results if expected.get(n) != results[n]]
        print("identical" if not bad else f"DIFFERENT: {bad}")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``marl train``, ``marl eval``, ``marl config``.

``marl train [CONFIG.yaml] [key=value ...]``
    Train. Without a config file the embedded default runs (PPO, shared parameters,
    MPE simple_spread_v3 with 3 agents). Overrides use dotted keys: ``algo.lr=1e-3``.
    ``resume=RUN_DIR`` continues a run from its ``checkpoints/latest.pt``.

``marl eval PATH [--episodes N] [--json]``
    Evaluate a run directory (its best checkpoint) or a checkpoint file on fresh,
    separately seeded envs; actions are the distribution's mode unless the run's
    ``eval.deterministic`` is false (``--deterministic`` / ``--stochastic`` override it).

``marl config [CONFIG.yaml] [key=value ...]``
    Print the resolved config; ``--keys`` lists every key with its default and doc.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import yaml

from marl.checkpoint import CheckpointError
from marl.config import DEFAULT_CONFIG, ConfigError, describe, load_config, to_dict


def _split_config_args(args: list[str]) -> tuple[str | None, list[str]]:
    path = None
    overrides = []
    for a in args:
        if "=" in a:
            overrides.append(a)
        elif path is None:
            path = a
        else:
            raise ConfigError(f"unexpected argument {a!r}: give one config file and key=value overrides")
    return path, overrides


def cmd_train(args: argparse.Namespace) -> int:
    from marl.api import train, train_config

    path, overrides = _split_config_args(args.args)
    train(train_config(path, overrides))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from marl.api import load_policy, train_config
    from marl.env.make import env_spec, eval_backend, vector_env
    from marl.evaluation import RandomPolicy, evaluate

    if args.random:  # the same evaluator and seeds, acting uniformly at random: "did it learn" in one command
        path, overrides = _split_config_args(args.args)
        cfg = train_config(path, overrides)
        policy = RandomPolicy(env_spec(cfg), cfg.seed)
    else:
        if len(args.args) != 1 or "=" in args.args[0]:
            raise ConfigError("marl eval takes one run directory or checkpoint (or --random CONFIG [key=value ...])")
        policy, cfg, _ = load_policy(args.args[0])
    episodes = args.episodes or cfg.eval.episodes
    make = functools.partial(vector_env, cfg, backend=eval_backend(cfg))
    seed = cfg.seed if args.seed is None else args.seed
    opponent = args.opponent or cfg.eval.opponent
    deterministic = cfg.eval.deterministic if args.deterministic is None else args.deterministic
    result = evaluate(policy, make, episodes, seed, deterministic=deterministic,
                      num_envs=min(episodes, cfg.eval.num_envs), opponent=opponent)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"episodes: {result['episodes']}  mean return (team): {result['ep_return']:.3f} "
              f"± {result['ep_return_std']:.3f}  "
              f"mean length: {result['ep_length']:.1f}")
        for agent, r in result["per_agent"].items():
            print(f"  {agent}: {r:.3f}")
        for k, v in result.items():
            if k not in ("ep_return", "ep_return_std", "agent_ep_return", "ep_length", "episodes") and \
                    isinstance(v, (int, float)):
                print(f"  {k}: {v:.3f}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.keys:
        for key, default, doc in describe():
            print(f"{key:<32} {default:<28} {doc}")
        return 0
    path, overrides = _split_config_args(args.args)
    print(yaml.safe_dump(to_dict(load_config(path or DEFAULT_CONFIG, overrides)), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marl", description="Multi-agent reinforcement learning on PettingZoo and Gymnasium."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a config (default: PPO on MPE simple_spread)")
    p.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="evaluate a run directory or checkpoint (or a random policy: --random CONFIG)")
    p.add_argument("args", nargs="+", help="RUN_DIR_OR_CHECKPOINT, or with --random: [CONFIG.yaml] [key=value ...]")
    p.add_argument("--random", action="store_true",
                   help="evaluate a uniformly random policy (allowed actions only) on the config's env, same seeds")
    p.add_argument("--episodes", type=int, default=0, help="episodes (default: the run's eval.episodes)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the run's seed)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=None,
                      help="take the mode of the action distribution (default: the run's eval.deterministic)")
    mode.add_argument("--stochastic", dest="deterministic", action="store_false",
                      help="sample actions instead of the mode")
    p.add_argument("--opponent", choices=["none", "random"], default=None,
                   help="random: the policy plays one seat, the other agents act randomly "
                        "(default: the run's eval.opponent)")
    p.set_defaults(func=cmd_eval)
    # Listed for --help; main() hands their arguments to the modules' own parsers.
    sub.add_parser("compare", help="train variants (e.g. shared vs independent) over seeds and write a report")
    sub.add_parser("record", help="write a video (MP4/GIF) of a trained policy acting in its env")
    sub.add_parser("tune", help="search hyperparameters with Optuna (TPE, pruning, SQLite study) and write a report")
    p = sub.add_parser("config", help="print the resolved config, or --keys for every key")
    p.add_argument("args", nargs="*")
    p.add_argument("--keys", action="store_true")
    p.set_defaults(func=cmd_config)
    return parser


DELEGATED = {"compare": "marl.comparison", "record": "marl.record", "tune": "marl.tune"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parent = os.environ.pop("MARL_STOP_WITH_PARENT", "")  # set by marl compare --jobs for its trainings
    if parent.isdigit():
        from marl.run import stop_with_parent

        stop_with_parent(int(parent))
    if argv and argv[0] in DELEGATED:  # these subcommands parse their own options (--help included)
        import importlib

        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError) as exc:
        print(f"marl: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - training failures with a message written for users
        from marl.env.vector import EnvWorkerError
        from marl.health import NonFiniteError

        if not isinstance(exc, (NonFiniteError, EnvWorkerError)):
            raise
        print(f"marl: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

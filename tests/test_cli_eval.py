"""`marl eval` follows the run's eval.deterministic unless --deterministic / --stochastic say otherwise."""

import json

import pytest

from marl.cli import main

TINY = ["total_env_steps=400", "env.num_envs=4", "algo.num_steps=50", "algo.update_epochs=1", "eval.episodes=2",
        "eval.num_envs=2", "log.progress=false", "log.tensorboard=false"]


def _eval(capsys, *args):
    capsys.readouterr()
    assert main(["eval", *args, "--episodes", "3", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["ep_return"]


def test_eval_mode_follows_the_run_config_and_flags(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"run_dir={run}", "eval.deterministic=false", *TINY]) == 0
    default = _eval(capsys, str(run))
    stochastic = _eval(capsys, str(run), "--stochastic")
    deterministic = _eval(capsys, str(run), "--deterministic")
    assert default == stochastic  # the run asked for sampled actions; same seed, same draws
    assert deterministic != stochastic
    with pytest.raises(SystemExit):  # argparse: the two flags exclude each other
        main(["eval", str(run), "--deterministic", "--stochastic"])


def test_stochastic_eval_leaves_the_callers_torch_rng_alone(tmp_path):
    import functools

    import torch

    from marl.config import load_config
    from marl.env.make import vector_env
    from marl.evaluation import evaluate
    from marl.on_policy.policy import ActorCriticPolicy

    cfg = load_config(None, ["norm.obs=false", *TINY])
    make = functools.partial(vector_env, cfg, backend="sync")
    probe = vector_env(cfg, 1, backend="sync")
    policy = ActorCriticPolicy(probe.spec, cfg)
    probe.close()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = evaluate(policy, make, 2, seed=1, deterministic=False, num_envs=2)
    after = torch.rand(3)
    b = evaluate(policy, make, 2, seed=1, deterministic=False, num_envs=2)
    torch.testing.assert_close(after, expected)
    assert a["ep_return"] == b["ep_return"]


def test_random_baseline_from_the_command_line(capsys):
    """``marl eval --random CONFIG``: the same evaluator and seeds, a uniformly random allowed-action policy."""
    import json

    from marl.cli import main

    args = ["eval", "--random", "configs/cartpole_ppo.yaml", "--episodes", "40", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == first  # reproducible
    assert 12 < first["ep_length"] < 40  # a random CartPole policy lasts about 22 steps
    # Masks are respected: in tic-tac-toe an illegal move costs the mover -1 and breaks the zero sum.
    assert main(["eval", "--random", "configs/tictactoe_ppo.yaml", "--episodes", "30", "--json",
                 "--opponent", "none"]) == 0
    ttt = json.loads(capsys.readouterr().out)
    assert ttt["ep_return"] == 0.0 and ttt["ep_return_std"] == 0.0 and ttt["episodes"] == 30

"""Bad input is refused before any work starts, with a message naming the key and the fix."""

import pytest

from marl.cli import main


@pytest.mark.parametrize(
    "args, words",
    [
        (["env.id=simple_sprad_v3"], ["env.id", "Did you mean", "mpe2.simple_spread_v3"]),
        (["env.kwargs={N: 3, bogus: 1}"], ["env.kwargs", "bogus"]),
        (["env.id=mpe2.simple_adversary_v3", "env.kwargs={}", "env.groups={all: [adversary_0, agent_0, agent_1]}"],
         ["env.groups", "mixes observation spaces", "different groups"]),
        (["algo.gamma=2"], ["algo.gamma", "(0, 1]"]),
        (["algo.lerning_rate=1"], ["algo.lerning_rate", "did you mean"]),
        (["model.critic=centre"], ["model.critic", "'central'"]),
        (["resume=/nonexistent/run"], ["no such checkpoint"]),
    ],
)
def test_bad_input_fails_fast_with_a_named_key(tmp_path, capsys, args, words):
    assert main(["train", f"run_dir={tmp_path / 'r'}", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marl: error:")
    for w in words:
        assert w in err, err
    assert not (tmp_path / "r").exists()  # a failed start leaves no run directory



def test_eval_of_a_directory_without_checkpoints(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["eval", str(tmp_path / "run")]) == 2
    assert "no checkpoints/best.pt or latest.pt" in capsys.readouterr().err


def test_eval_of_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing.pt")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err


def test_missing_config_file_is_one_line_before_anything_starts(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml"), f"run_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marl: error:") and err.count("\n") == 1, err
    assert "missing.yaml: no such config file" in err and not (tmp_path / "r").exists()
    assert main(["train", str(tmp_path)]) == 2  # a directory where a file was meant: says so
    assert "resume=DIR" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["seed=-1"], ["seed", "non-negative"]),
    (["configs/cartpole_dqn.yaml", "env.id=Pendulum-v1"], ["algo.name=dqn needs Discrete actions", "sac or td3"]),
    (["configs/pendulum_td3.yaml", "env.id=CartPole-v1"], ["algo.name=td3 needs Box actions"]),
    (["configs/cartpole_dqn.yaml", "env.id=pettingzoo.classic.tictactoe_v3", "algo.n_step=3"],
     ["algo.n_step", "turn-based", "algo.n_step=1"]),
    (["env.id=no_such_module_xyz:make_env", "env.kwargs={}"],
     ["cannot import module 'no_such_module_xyz'", "PYTHONPATH"]),
    (["env.id=ALE/Pong-v5", "env.kwargs={}"], ["ale-py"]),
    (["env.id=phys2d/CartPole-v1", "env.kwargs={}"], ["jax", "gymnasium[jax]"]),
])
def test_first_try_mistakes_are_one_line_errors(tmp_path, capsys, args, words):
    files, overrides = [a for a in args if "=" not in a], [a for a in args if "=" in a]
    assert main(["train", *files, f"run_dir={tmp_path / 'r'}", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marl: error:") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "r").exists()  # nothing that resume or marl compare could take for a run


def test_eval_of_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    assert main(["eval", str(tmp_path / "config.yaml")]) == 2
    assert "cannot read the checkpoint" in capsys.readouterr().err

"""The scaffolding both trainers share (marl.run): signals, eval records, checkpoint entries, the schedule."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from marl import checkpoint as ckpt
from marl.off_policy import OffPolicyTrainer
from marl.on_policy.trainer import OnPolicyTrainer
from marl.run import StopSignals, TrainingInterrupted, TrainingRun, eval_record, next_multiple, score

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMON_ENTRIES = {"format_version", "config", "policy", "learner", "counters", "rng", "env", "best_eval",
                  "eval_history", "health"}
COUNTERS = {"env_steps", "agent_steps", "iteration", "episodes", "wall_time_s"}
RNG = {"python", "numpy", "torch"}
SUMMARY_KEYS = {"env_steps", "agent_steps", "env_frames", "iterations", "episodes", "grad_steps", "wall_time_s", "sps",
                "agent_sps", "final_eval", "best_eval", "eval_history", "n_parameters"}


@pytest.fixture
def default_signal_handlers():
    """Put back the interpreter's handlers after a test that leaves absorbing ones installed."""
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --------------------------------------------------------------------------- small pieces
def test_stop_signals_keep_the_first_and_restore_handlers_only_without_one(default_signal_handlers):
    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        assert stop.signum is None and signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before  # nothing arrived: the old handlers are back
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a repeat is absorbed, the first one kept
        assert stop.signum == signal.SIGTERM
    absorbing = signal.getsignal(signal.SIGINT)
    assert absorbing is not before  # after a signal the process is exiting: repeats stay absorbed
    os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
    assert stop.signum == signal.SIGTERM


def test_eval_record_keeps_every_scalar_number_and_nothing_else():
    result = {"ep_return": 1.5, "ep_return_std": 0.5, "per_agent": {"a": 1.0}, "per_group": {"g": 1.0},
              "ep_length": 7.0, "episodes": 4, "success_rate": 0.25, "win_rate": 0.5, "opponent": "random",
              "wall_time_s": 3.0, "env_steps": 800, "flag": True}
    record = eval_record(result)
    assert list(record)[:2] == ["env_steps", "wall_time_s"]
    assert record == {"env_steps": 800, "wall_time_s": 3.0, "ep_return": 1.5, "ep_return_std": 0.5, "ep_length": 7.0,
                      "episodes": 4, "success_rate": 0.25, "win_rate": 0.5}


def test_schedule_and_score():
    assert [next_multiple(s, 400) for s in (0, 399, 400, 401)] == [400, 400, 800, 800]
    assert next_multiple(123, 0) == 0  # 0 = never
    assert score({"ep_return": -3.0}) == -3.0
    assert score({"ep_return": -3.0, "win_rate": 0.75}) == 0.75


def test_a_failing_build_closes_the_envs(make_config):
    closed = []

    class Broken(OffPolicyTrainer):
        def build(self):
            raise RuntimeError("no networks today")

        def close(self):
            closed.append(True)
            super().close()

    with pytest.raises(RuntimeError, match="no networks today"):
        Broken(make_config("configs/cartpole_dqn.yaml", "env.backend=sync"))
    assert closed == [True]


def test_a_failing_restore_closes_the_envs(make_config, tiny_dqn):
    first = OffPolicyTrainer(make_config("configs/cartpole_dqn.yaml", *tiny_dqn, "eval.interval=0",
                                         "algo.save_replay=true", "algo.buffer_size=1000", run="first"))
    first.train()
    closed = []

    class Counting(OffPolicyTrainer):
        def close(self):
            closed.append(True)
            super().close()

    with pytest.raises(ckpt.CheckpointError, match=r"field 'obs' is float32 \(1000, 1, 1, 4\), the buffer's is "
                                                   r"float32 \(800, 1, 1, 4\).*resume with the run's config.yaml"):
        Counting(make_config("configs/cartpole_dqn.yaml", *tiny_dqn, "algo.save_replay=true", "algo.buffer_size=800",
                             f"resume={first.run_dir}", run="second"))
    assert closed == [True]


# --------------------------------------------------------------------------- both trainers, one scaffolding
def test_both_trainers_write_the_same_run_layout_and_checkpoint_entries(make_config, tiny_ppo, tiny_dqn):
    ppo = OnPolicyTrainer(make_config("configs/simple_spread_ppo.yaml", *tiny_ppo, "checkpoint.keep_last=2", run="ppo"))
    dqn = OffPolicyTrainer(make_config("configs/cartpole_dqn.yaml", *tiny_dqn, "checkpoint.interval=600",
                                       "checkpoint.keep_last=2", run="dqn"))
    for trainer, extra, extra_counters, extra_rng in ((ppo, {"collector"}, set(), {"generator"}),
                                                      (dqn, set(), {"since_train"}, {"replay", "actor"})):
        summary = trainer.train()
        run = trainer.run_dir
        assert set(summary) == SUMMARY_KEYS
        assert json.loads((run / "summary.json").read_text())["env_steps"] == summary["env_steps"]
        assert (run / "config.yaml").is_file()
        names = sorted(p.name for p in (run / "checkpoints").iterdir())
        last = summary["env_steps"]
        assert names == sorted(["best.pt", "latest.pt", *(f"step_{s}.pt" for s in (last // 2, last))]), names
        state = ckpt.load(run / "checkpoints" / "latest.pt")
        assert set(state) == COMMON_ENTRIES | extra
        assert set(state["counters"]) == COUNTERS | extra_counters
        assert set(state["rng"]) == RNG | extra_rng
        assert state["counters"]["env_steps"] == last and state["learner"]["grad_steps"] == summary["grad_steps"]
        assert [e["env_steps"] for e in summary["eval_history"]] == [last // 2, last]
        best = ckpt.load(run / "checkpoints" / "best.pt")
        assert best["best_eval"]["ep_return"] == summary["best_eval"]["ep_return"]
        assert score(summary["best_eval"]) == max(e["ep_return"] for e in summary["eval_history"])


def test_eval_history_keeps_every_numeric_eval_metric(make_config):
    """A goal env reports success_rate: each history entry keeps it (and the other numbers) as evaluated."""
    trainer = OffPolicyTrainer(make_config(
        "configs/bitflip_dqn_her.yaml", "env.kwargs.n_bits=4", "env.num_envs=2", "total_env_steps=400",
        "algo.learning_starts=100", "algo.batch_size=16", "model.hidden=[16]", "eval.interval=200",
        "eval.episodes=4", "eval.num_envs=2"))
    summary = trainer.train()
    history = summary["eval_history"]
    assert [e["env_steps"] for e in history] == [200, 400]
    for entry in history:
        assert {"success_rate", "ep_length", "ep_return_std", "agent_ep_return", "episodes"} <= set(entry)
        assert 0.0 <= entry["success_rate"] <= 1.0 and entry["episodes"] == 4
    final = summary["final_eval"]
    assert history[-1] == eval_record(final)
    assert history[-1]["success_rate"] == final["success_rate"] and history[-1]["ep_length"] == final["ep_length"]


def test_ppo_eval_history_keeps_win_draw_and_loss_rates(make_config):
    trainer = OnPolicyTrainer(make_config(
        "configs/tictactoe_ppo.yaml", "total_env_steps=256", "env.num_envs=4", "algo.num_steps=32",
        "algo.update_epochs=1", "algo.num_minibatches=1", "model.hidden=[16]", "eval.interval=128",
        "eval.episodes=6", "eval.num_envs=2", "env.backend=sync"))
    summary = trainer.train()
    history = summary["eval_history"]
    assert [e["env_steps"] for e in history] == [128, 256]
    for entry in history:
        assert entry["win_rate"] + entry["draw_rate"] + entry["loss_rate"] == pytest.approx(1.0)
        assert "learner_ep_return" in entry and "opponent" not in entry  # strings are left out
    best = max(history, key=lambda e: e["win_rate"])  # "best" is the win rate against the random opponent
    assert summary["best_eval"]["win_rate"] == best["win_rate"]


def test_off_policy_sigint_saves_latest_and_exits_like_ppo(make_config, tiny_dqn, default_signal_handlers):
    trainer = OffPolicyTrainer(make_config("configs/cartpole_dqn.yaml", *tiny_dqn, "total_env_steps=100000",
                                           "eval.interval=0", "checkpoint.interval=0"))
    real_collect = trainer.collect

    def collect(epsilon):
        episodes = real_collect(epsilon)
        if trainer.env_steps == 300:
            os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)  # and an impatient second one
        return episodes

    trainer.collect = collect
    with pytest.raises(TrainingInterrupted) as info:
        trainer.train()
    assert info.value.code == 130
    state = ckpt.load(trainer.ckpt_dir / "latest.pt")
    assert state["counters"]["env_steps"] == 300
    assert not (trainer.run_dir / "summary.json").exists()
    for name, value in trainer.actor.net.state_dict().items():
        assert torch.equal(value, state["policy"]["net"][name]), name


def test_training_run_is_abstract_and_needs_every_hook():
    hooks = {"build", "advance", "acting_policy", "n_parameters"}
    assert TrainingRun.__abstractmethods__ == frozenset(hooks)
    for cls in (OnPolicyTrainer, OffPolicyTrainer):
        assert not cls.__abstractmethods__
        assert all(name in vars(cls) for name in hooks), cls  # each trainer supplies its algorithm


def test_resumed_wall_time_and_counters_continue(make_config, tiny_dqn):
    first = OffPolicyTrainer(make_config("configs/cartpole_dqn.yaml", *tiny_dqn, "eval.interval=0"))
    first.train()
    saved = ckpt.load(first.ckpt_dir / "latest.pt")["counters"]
    resumed = OffPolicyTrainer(make_config("configs/cartpole_dqn.yaml", *tiny_dqn, "eval.interval=0",
                                           "total_env_steps=1500", f"resume={first.run_dir}", run="second"))
    assert (resumed.env_steps, resumed.iteration, resumed.episodes) == (
        saved["env_steps"], saved["iteration"], saved["episodes"])
    assert resumed.wall_time() == pytest.approx(saved["wall_time_s"])
    summary = resumed.train()
    assert summary["env_steps"] == 1500 and summary["wall_time_s"] > saved["wall_time_s"]
    assert np.isfinite(summary["final_eval"]["ep_return"])


def test_competitive_games_pick_best_by_the_named_side(make_config, tiny_ppo, capsys):
    """simple_adversary: best.pt follows the adversary's return when eval.score_groups says so; the result,
    summary.json and the last line show the score beside the (meaningless here) team return."""
    import json

    cfg = make_config("configs/simple_adversary_ppo.yaml", *tiny_ppo, "eval.score_groups=[adversary]", run="adv")
    summary = OnPolicyTrainer(cfg).train()
    final = summary["final_eval"]
    assert final["score_groups"] == "adversary"
    assert final["score"] == pytest.approx(final["per_agent"]["adversary_0"])
    assert max(e["score"] for e in summary["eval_history"]) == pytest.approx(summary["best_eval"]["score"])
    on_disk = json.loads((Path(cfg.run_dir) / "summary.json").read_text())
    assert on_disk["final_eval"]["score"] == pytest.approx(final["score"])
    assert "score (adversary) final" in capsys.readouterr().out
    with pytest.raises(Exception, match="eval.score_groups: unknown groups"):
        OnPolicyTrainer(make_config("configs/simple_adversary_ppo.yaml", *tiny_ppo, "eval.score_groups=[nobody]",
                                    run="bad")).train()


def test_the_last_line_of_a_zero_sum_game_shows_win_draw_loss():
    from marl.run import result_line

    game = {"ep_return": 0.0, "win_rate": 0.7, "draw_rate": 0.1, "loss_rate": 0.2, "opponent": "random"}
    assert result_line({"final_eval": game, "best_eval": {**game, "win_rate": 0.8}}) == \
        "final eval vs random: win 0.70 / draw 0.10 / loss 0.20, best win rate 0.80"
    team = {"ep_return": -50.0}
    assert result_line({"final_eval": team, "best_eval": {"ep_return": -40.0}}) == (
        "final eval return -50.00, best -40.00")

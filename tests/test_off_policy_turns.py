"""Off-policy learning on turn-based (AEC) games: transitions from a move to the agent's next turn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marl.off_policy.turns import TurnRows
from marl.types import ActOutput, GroupObs, GroupTransition

# A scripted tic-tac-toe game: player_1 takes the top row (cells 0, 1, 2), player_2 plays 3 and 4.
MOVES = [0, 3, 1, 4, 2]


def _scripted(move: int):
    """An ``act`` for EnvLoop.step that plays ``move`` for whoever is to move."""
    def act(obs, state):
        o = obs["player"]
        action = np.where(o.alive, move, 0).astype(np.int64)
        return ActOutput({"player": torch.from_numpy(action)}, {"player": action}, {}, {}, {}, {})
    return act


@pytest.fixture
def game(make_config):
    from marl.off_policy.trainer import OffPolicyTrainer

    trainer = OffPolicyTrainer(make_config("configs/cartpole_dqn.yaml", "env.id=pettingzoo.classic.tictactoe_v3",
                                           "env.kwargs={}", "env.num_envs=1", "env.backend=sync"))
    yield trainer
    trainer.close()


def test_rows_run_from_a_move_to_the_next_turn_with_the_rewards_in_between(game):
    """By hand: each player's move completes at its next turn (next_obs = the board it then sees, with its mask);
    the winning move ends both transitions: +1 for the winner, -1 for the loser (received on the winner's move)."""
    assert [a for g in game.spec.groups for a in g.agents] == ["player_1", "player_2"]
    turns = TurnRows()
    emitted, seen = [], []
    for move in MOVES:
        obs, out, step = game.loop.step(_scripted(move))
        seen.append(obs["player"])
        emitted.append(turns.rows(obs["player"], out.action["player"].numpy(), step.transition["player"],
                                  step.obs["player"]))
    alive = [r["alive"][0].tolist() for r in emitted]
    assert alive == [[False, False], [True, False], [False, True], [True, False], [True, True]]
    # step 1 completes player_1's first move (cell 0): it sees the board after player_2's reply
    r = emitted[1]
    assert r["action"][0, 0] == 0 and r["reward"][0, 0] == 0.0 and not r["terminated"][0, 0]
    np.testing.assert_array_equal(r["obs"][0, 0], seen[0].obs[0, 0])
    np.testing.assert_array_equal(r["next_obs"][0, 0], seen[2].obs[0, 0])
    np.testing.assert_array_equal(r["next_action_mask"][0, 0], seen[2].action_mask[0, 0])
    assert r["next_action_mask"][0, 0].tolist() == [c not in (0, 3) for c in range(9)]
    # step 2 completes player_2's move (cell 3)
    assert emitted[2]["action"][0, 1] == 3 and emitted[2]["reward"][0, 1] == 0.0
    np.testing.assert_array_equal(emitted[2]["next_obs"][0, 1], seen[3].obs[0, 1])
    # the last step: player_1's winning move (cell 2, +1) and player_2's last move (cell 4, -1) both end
    last = emitted[4]
    assert last["action"][0].tolist() == [2, 4]
    assert last["reward"][0].tolist() == [1.0, -1.0]
    assert last["terminated"][0].tolist() == [True, True] and not last["truncated"].any()
    np.testing.assert_array_equal(last["next_obs"][0], step.transition["player"].final_obs[0])
    np.testing.assert_array_equal(last["next_action_mask"][0], step.transition["player"].final_action_mask[0])
    # the next episode's first move has no pending transition: nothing is emitted for it
    obs, out, step = game.loop.step(_scripted(4))
    assert not turns.rows(obs["player"], out.action["player"].numpy(), step.transition["player"],
                          step.obs["player"])["alive"].any()


def test_a_truncated_move_bootstraps_among_the_actions_of_its_final_mask():
    """By hand, two agents in one copy: agent 0 moves (mask [1, 1, 0]), then the game is truncated before its
    next turn; its row ends there and its next_action_mask is the mask given with its final observation (the
    truncated bootstrap chooses among those actions), not every action. Agent 1 never moved: no row."""
    E, A, n = 1, 2, 3
    obs = np.arange(E * A * 2, dtype=np.float32).reshape(E, A, 2)
    before = GroupObs(obs, np.array([[True, False]]), np.array([[[True, True, False], [True, True, True]]]))
    after = GroupObs(obs + 10, np.array([[True, False]]), np.ones((E, A, n), bool))  # the next episode's first
    final_mask = np.array([[[False, True, True], [True, False, True]]])
    tr = GroupTransition(np.array([[0.5, -0.5]], np.float32), np.zeros((E, A), bool), np.ones((E, A), bool),
                         obs - 10, final_action_mask=final_mask)
    rows = TurnRows().rows(before, np.array([[1, 0]]), tr, after)
    assert rows["alive"][0].tolist() == [True, False]
    assert rows["truncated"][0, 0] and not rows["terminated"][0, 0]
    np.testing.assert_array_equal(rows["next_obs"][0, 0], obs[0, 0] - 10)
    assert rows["next_action_mask"][0, 0].tolist() == [False, True, True]
    assert rows["action_mask"][0, 0].tolist() == [True, True, False]
    assert rows["reward"][0].tolist() == [0.5, 0.0]


def test_dqn_collects_turn_rows_into_its_replay_and_trains(game):
    """The trainer's collection stores one row per completed turn transition (alive count = completed moves)."""
    for _ in range(40):
        game.collect(1.0)
    sample = game.replay["player"].sample(64, game.rng, 1.0)
    assert sample.alive.any(axis=1).mean() > 0.5  # most sampled rows hold a completed transition
    # every completed transition's reward is a game outcome in {-1, 0, 1}, non-zero only where the game ended
    alive = sample.alive.astype(bool)
    assert set(np.unique(sample.reward_n[alive])) <= {-1.0, 0.0, 1.0}
    assert not (sample.reward_n[alive & ~sample.terminated_n.astype(bool)] != 0).any()
    metrics = game.train_step()
    assert np.isfinite(metrics["q_loss"])


def test_n_step_is_refused_on_turn_based_games(make_config):
    from marl.config import ConfigError
    from marl.off_policy.trainer import OffPolicyTrainer

    with pytest.raises(ConfigError, match="algo.n_step=1"):
        OffPolicyTrainer(make_config("configs/cartpole_dqn.yaml", "env.id=pettingzoo.classic.tictactoe_v3",
                                     "env.kwargs={}", "algo.n_step=3"))


@pytest.mark.slow
def test_dqn_learns_tic_tac_toe_against_a_random_player(make_config):
    """20k env steps of self-play DQN: a win rate of at least 0.8 against a uniformly random player (a random
    player wins about 0.44 of its games against another, over both seats)."""
    from marl.off_policy.trainer import OffPolicyTrainer

    summary = OffPolicyTrainer(make_config("configs/tictactoe_dqn.yaml", "total_env_steps=20000",
                                           "eval.interval=0")).train()
    assert summary["final_eval"]["win_rate"] >= 0.8

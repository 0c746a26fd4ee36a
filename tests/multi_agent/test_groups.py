"""Grouping, sharing and the one input rule every algorithm follows (marl/multi_agent/groups.py)."""

import numpy as np
import pytest
from gymnasium import spaces

from marl.algos.dqn import QPolicyNet
from marl.config import load_config
from marl.multi_agent.groups import group_net, is_image
from marl.on_policy.policy import ActorCriticPolicy
from marl.types import EnvSpec, GroupSpec


def board_spec(dtype) -> EnvSpec:
    """connect_four-like: [6, 7, 2] planes, Discrete(7), two players sharing one group."""
    obs = spaces.Box(0, 1, (6, 7, 2), dtype)
    group = GroupSpec("player", ("player_0", "player_1"), obs, spaces.Discrete(7), has_action_mask=True)
    return EnvSpec(group.agents, (group,))


@pytest.mark.parametrize("dtype, scale", [(np.int8, 1.0), (np.float32, 1.0), (np.uint8, 255.0)])
def test_every_algorithm_follows_one_encoder_rule(dtype, scale):
    """6x7 board planes (int8 / float) and uint8 [H, W, C] images both go to a CNN; only the images are pixels
    (/255, never standardized); planes are standardized features. DQN, SAC and TD3 build their networks through
    group_net, PPO through its actor-critic: the same rule, and model.encoder=mlp flattens the planes."""
    spec = board_spec(dtype)
    group = spec.groups[0]
    model = load_config(None, ["model.hidden=[16]"]).model
    assert is_image(group.obs_space.shape, group.obs_space.dtype) == (scale == 255.0)
    net = group_net(group, model, tuple(group.obs_space.shape), 7, out_gain=1.0)
    assert (net.encoder, net.input_scale) == ("cnn", scale)
    assert QPolicyNet(spec, model, dueling=False)["player"].net.encoder == "cnn"
    ppo = ActorCriticPolicy(spec, load_config(None, ["model.hidden=[16]", "model.critic=local"]))
    actor = ppo.net["player"].actor
    assert (actor.encoder, actor.input_scale) == ("cnn", scale)
    assert ("player" in ppo.obs_norm) == (scale == 1.0)  # images are never standardized, features are
    if scale == 1.0:
        flat = load_config(None, ["model.hidden=[16]", "model.encoder=mlp"]).model
        assert group_net(group, flat, tuple(group.obs_space.shape), 7, out_gain=1.0).encoder == "mlp"


def test_q_input_of_observation_plus_action_is_never_a_cnn():
    """SAC/TD3 critics read observation + action: a vector even when the observation is an image."""
    group = board_spec(np.uint8).groups[0]
    model = load_config(None, ["model.hidden=[16]"]).model
    assert group_net(group, model, (6 * 7 * 2 + 7,), 1, out_gain=1.0).encoder == "mlp"


def test_one_encoder_rule_for_every_observation_kind():
    from marl.config import ConfigError
    from marl.multi_agent.groups import obs_encoder

    assert obs_encoder((84, 84, 3), np.dtype(np.uint8)) == ("cnn", 255.0)  # pixels
    assert obs_encoder((8, 8, 111), np.dtype(bool)) == ("cnn", 1.0)  # chess planes
    assert obs_encoder((6, 7, 2), np.dtype(np.float32)) == ("cnn", 1.0)  # connect four
    assert obs_encoder((3, 3, 2), np.dtype(np.float32)) == ("mlp", 1.0)  # tic-tac-toe: too small to convolve
    assert obs_encoder((3, 3, 2), np.dtype(np.float32), "cnn") == ("cnn", 1.0)
    assert obs_encoder((8, 8, 111), np.dtype(bool), "mlp") == ("mlp", 1.0)
    assert obs_encoder((18,), np.dtype(np.float32)) == ("mlp", 1.0)
    with pytest.raises(ConfigError, match="model.encoder=cnn needs"):
        obs_encoder((18,), np.dtype(np.float32), "cnn")
    with pytest.raises(ConfigError, match="model.encoder=mlp.*uint8 images"):
        obs_encoder((84, 84, 3), np.dtype(np.uint8), "mlp")


@pytest.mark.parametrize("algo", ["ppo", "dqn", "sac"])
def test_board_planes_get_a_cnn_in_every_algorithm(make_config, algo):
    """Chess (8x8x111 boolean planes): a CNN by default, several times smaller than the flattening MLP of the
    same widths (its input layers alone: 7104 x 64 weights); model.encoder=mlp brings the MLP back."""
    from marl.api import train_config  # noqa: F401 (config loading)
    from marl.env.make import env_spec
    from marl.registry import algorithm

    base = {"ppo": "configs/tictactoe_ppo.yaml", "dqn": "configs/tictactoe_dqn.yaml",
            "sac": "configs/pendulum_sac.yaml"}[algo]
    sizes = {}
    for encoder in ("auto", "mlp"):
        cfg = make_config(base, "env.id=pettingzoo.classic.chess_v6", "env.kwargs={}", f"model.encoder={encoder}",
                          "model.hidden=[64, 64]", *([] if algo == "ppo" else ["algo.target_update_interval=1"]))
        policy = algorithm(algo).build_acting_policy(env_spec(cfg), cfg)
        net = policy.net
        encoders = {m.encoder for m in net.modules() if hasattr(m, "encoder") and isinstance(m.encoder, str)}
        if encoder == "auto":
            assert encoders == {"cnn"}, (algo, encoders)
        else:  # MLPs (PPO's shared actor and critic are one TwinMLP, which has no encoder attribute)
            assert "cnn" not in encoders, (algo, encoders)
        n_actions = env_spec(cfg).groups[0].action_space.n  # the 4672-action head is the same in both: left out
        sizes[encoder] = sum(p.numel() for p in net.parameters() if n_actions not in p.shape)
    assert sizes["mlp"] > 2.5 * sizes["auto"], sizes

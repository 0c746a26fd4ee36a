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


@pytest.mark.parametrize("dtype, encoder", [(np.int8, "mlp"), (np.float32, "mlp"), (np.uint8, "cnn")])
def test_every_algorithm_treats_only_uint8_hwc_as_pixels(dtype, encoder):
    """int8 / float board planes are features (MLP, standardized); only uint8 [H, W, C] is an image (CNN, /255).
    DQN, SAC and TD3 build their networks through group_net, PPO through its actor-critic: same rule."""
    spec = board_spec(dtype)
    group = spec.groups[0]
    model = load_config(None, ["model.hidden=[16]"]).model
    assert is_image(group.obs_space.shape, group.obs_space.dtype) == (encoder == "cnn")
    assert group_net(group, model, tuple(group.obs_space.shape), 7, out_gain=1.0).encoder == encoder
    assert QPolicyNet(spec, model, dueling=False)["player"].net.encoder == encoder
    ppo = ActorCriticPolicy(spec, load_config(None, ["model.hidden=[16]", "model.critic=local"]))
    net = ppo.net["player"]
    assert (net.actor.encoder if not net.uses_twin else "mlp") == encoder
    # Images are never standardized, features are (norm.obs defaults to true).
    assert ("player" in ppo.obs_norm) == (encoder == "mlp")


def test_q_input_of_observation_plus_action_is_never_a_cnn():
    """SAC/TD3 critics read observation + action: a vector even when the observation is an image."""
    group = board_spec(np.uint8).groups[0]
    model = load_config(None, ["model.hidden=[16]"]).model
    assert group_net(group, model, (6 * 7 * 2 + 7,), 1, out_gain=1.0).encoder == "mlp"

"""Env ids, error messages, preprocessing."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from gymnasium import spaces

from marl.env.adapters import AECAdapter, GymAdapter, ParallelAdapter
from marl.env.make import adapter_factory, close_env_ids, known_env_ids, make_adapter, probe_spec
from marl.env.wrappers import Preprocess, stacked_shape


@pytest.mark.parametrize(
    ("typo", "expected"),
    [
        ("Cartpole-v1", "CartPole-v1"),
        ("mpe2.simple_sprad_v3", "mpe2.simple_spread_v3"),
        ("simple_sprad_v3", "mpe2.simple_spread_v3"),
        ("pettingzoo.classic.conect_four_v3", "pettingzoo.classic.connect_four_v3"),
    ],
)
def test_unknown_id_lists_close_matches(typo, expected):
    with pytest.raises(ValueError, match="unknown env id") as info:
        make_adapter(typo, {})
    message = str(info.value)
    assert expected in message and "module path" in message
    assert expected in close_env_ids(typo)


def test_known_ids_scan_packages_without_importing_them():
    ids = known_env_ids()
    assert {"CartPole-v1", "mpe2.simple_spread_v3", "pettingzoo.butterfly.pistonball_v6"} <= set(ids)
    assert "pettingzoo.sisl.multiwalker_v9" in ids and "pettingzoo.classic.tictactoe_v3" in ids


@pytest.mark.parametrize(
    ("env_id", "kind", "turn_based"),
    [
        ("CartPole-v1", GymAdapter, False),
        ("Pendulum-v1", GymAdapter, False),
        ("mpe2.simple_spread_v3", ParallelAdapter, False),
        ("mpe2.simple_spread_v3:parallel_env", ParallelAdapter, False),
        ("pettingzoo.classic.connect_four_v3", AECAdapter, True),
        ("pettingzoo.classic.tictactoe_v3:env", AECAdapter, True),
        ("pettingzoo.sisl.multiwalker_v9", ParallelAdapter, False),
        ("sisl/multiwalker_v9", ParallelAdapter, False),
        ("classic/tictactoe-v3", AECAdapter, True),
    ],
)
def test_ids_resolve_to_the_matching_adapter(env_id, kind, turn_based):
    adapter = make_adapter(env_id, {})
    try:
        assert isinstance(adapter, kind) and adapter.spec.turn_based == turn_based
        obs, _ = adapter.reset(seed=0)
        for g in adapter.spec.groups:
            assert obs[g.name].obs.shape == (g.n_agents, *g.obs_space.shape)
    finally:
        adapter.close()


def test_spaces_of_resolved_envs():
    walker = probe_spec(adapter_factory("pettingzoo.sisl.multiwalker_v9"))
    assert walker.group("walker").action_space == spaces.Box(-1, 1, (4,), np.float32)
    c4 = probe_spec(adapter_factory("pettingzoo.classic.connect_four_v3"))
    assert c4.group("player").has_action_mask and c4.group("player").action_space == spaces.Discrete(7)
    assert probe_spec(adapter_factory("Pendulum-v1")).groups[0].obs_space.shape == (3,)


def test_env_kwargs_and_factory_are_passed_through():
    factory = adapter_factory("mpe2.simple_spread_v3", {"N": 4, "max_cycles": 3})
    adapter = factory()
    assert adapter.spec.n_agents == 4
    adapter.reset(seed=0)
    for _ in range(3):
        out = adapter.step({"agent": np.zeros(4, np.int64)})
    assert out.episode is not None and out.episode.length == 3


def test_missing_package_names_pip_command(monkeypatch):
    for name in [m for m in sys.modules if m == "mpe2" or m.startswith("mpe2.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mpe2", None)
    with pytest.raises(ImportError, match="pip install mpe2"):
        make_adapter("mpe2.simple_spread_v3", {})


def test_missing_dependency_of_a_module_names_pip_command(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("pettingzoo.butterfly")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pymunk", None)
    with pytest.raises(ImportError, match=r"pymunk.*pip install 'pettingzoo\[butterfly\]'"):
        make_adapter("pettingzoo.butterfly.pistonball_v6", {})


def test_module_without_env_maker_is_rejected():
    with pytest.raises(ValueError, match="neither parallel_env"):
        make_adapter("numpy.linalg", {})


def test_frame_stack_on_vectors_repeats_the_first_obs():
    plain = make_adapter("mpe2.simple_spread_v3", {})
    stacked = make_adapter("mpe2.simple_spread_v3", {}, preprocess=Preprocess(frame_stack=3))
    assert stacked.spec.groups[0].obs_space.shape == stacked_shape((18,), 3) == (54,)
    first, _ = plain.reset(seed=2)
    obs, _ = stacked.reset(seed=2)
    np.testing.assert_array_equal(obs["agent"].obs, np.tile(first["agent"].obs, 3))
    a = np.array([1, 2, 3])
    nxt = plain.step({"agent": a}).obs["agent"].obs
    out = stacked.step({"agent": a}).obs["agent"].obs
    np.testing.assert_array_equal(out, np.concatenate([first["agent"].obs, first["agent"].obs, nxt], axis=1))


def test_image_preprocessing_shapes_on_pistonball():
    kwargs = {"n_pistons": 3, "max_cycles": 5}
    gray = make_adapter(
        "pettingzoo.butterfly.pistonball_v6",
        kwargs,
        preprocess=Preprocess(grayscale=True, resize=(20, 16)),
        use_state=False,
    )
    space = gray.spec.group("piston").obs_space
    assert space.shape == (20, 16, 1) and space.dtype == np.uint8
    stacked = make_adapter(
        "pettingzoo.butterfly.pistonball_v6",
        kwargs,
        preprocess=Preprocess(grayscale=True, resize=(20, 16), frame_stack=4),
        use_state=False,
    )
    assert stacked.spec.group("piston").obs_space.shape == (20, 16, 4)
    obs, _ = stacked.reset(seed=0)
    single, _ = gray.reset(seed=0)
    assert obs["piston"].obs.dtype == np.uint8
    np.testing.assert_array_equal(obs["piston"].obs[..., 3], single["piston"].obs[..., 0])
    np.testing.assert_array_equal(obs["piston"].obs[..., 0], single["piston"].obs[..., 0])


def test_gym_action_repeat_sums_rewards_and_stops_at_the_end():
    adapter = make_adapter("CartPole-v1", {"max_episode_steps": 5}, preprocess=Preprocess(action_repeat=2))
    adapter.reset(seed=0)
    rewards = [adapter.step({"agent": np.array([i % 2])}) for i in range(3)]
    assert [float(r.transition["agent"].reward[0]) for r in rewards] == [2.0, 2.0, 1.0]
    assert rewards[-1].transition["agent"].truncated[0] and rewards[-1].episode.length == 3
    with pytest.raises(ValueError, match="turn-based"):
        make_adapter("pettingzoo.classic.tictactoe_v3", {}, preprocess=Preprocess(action_repeat=2))


def test_pad_lets_unlike_agents_share_one_group():
    spec = probe_spec(adapter_factory(
        "mpe2.simple_adversary_v3",
        groups={"all": ["adversary_0", "agent_0", "agent_1"]},
        preprocess=Preprocess(pad=True),
    ))
    assert spec.groups[0].obs_space.shape == (10,) and spec.groups[0].action_space == spaces.Discrete(5)


def test_preprocess_validation():
    assert not Preprocess().enabled and Preprocess(resize=[84, 84]).resize == (84, 84)
    with pytest.raises(ValueError, match="frame_stack"):
        Preprocess(frame_stack=0)
    with pytest.raises(ValueError, match="resize"):
        Preprocess(resize=(84,))


def test_pistonball_draws_its_observations_without_an_explicit_render_mode():
    # pistonball skips drawing when render_mode is None: every observation would be the first frame.
    from marl.env.make import make_raw_env

    env = make_raw_env("pettingzoo.butterfly.pistonball_v6", {"n_pistons": 8, "max_cycles": 20})
    assert env.unwrapped.render_mode == "rgb_array"
    obs, _ = env.reset(seed=0)
    first = {a: o.copy() for a, o in obs.items()}
    obs, *_ = env.step({a: np.ones(1, np.float32) for a in env.agents})  # every piston moves up
    assert any(not np.array_equal(first[a], obs[a]) for a in obs)
    explicit = make_raw_env("pettingzoo.butterfly.pistonball_v6", {"n_pistons": 3, "render_mode": None})
    assert explicit.unwrapped.render_mode is None  # a user's explicit choice wins


def test_single_group_puts_every_seat_in_one_shared_group():
    """Self-play across name prefixes (go: black_0 / white_0) is one key; the partition is otherwise by prefix."""
    from marl.config import ConfigError, load_config
    from marl.env.make import env_spec

    base = ["env.id=pettingzoo.classic.go_v5", "env.kwargs={board_size: 5}"]
    by_prefix = env_spec(load_config("configs/tictactoe_ppo.yaml", base))
    assert [g.name for g in by_prefix.groups] == ["black", "white"]
    one = env_spec(load_config("configs/tictactoe_ppo.yaml", [*base, "env.single_group=true"]))
    assert [(g.name, g.agents) for g in one.groups] == [("all", ("black_0", "white_0"))]
    with pytest.raises(ConfigError, match="env.single_group"):
        load_config("configs/tictactoe_ppo.yaml",
                    [*base, "env.single_group=true", "env.groups={a: [black_0, white_0]}"])


def test_frozen_screen_observations_are_caught_and_cooperative_pong_gets_a_render_mode():
    """cooperative_pong draws its observations only with a render mode: marl sets one by default, and an env
    whose image observations never change over random steps is reported (here: render_mode=None forced)."""
    from marl.config import load_config
    from marl.env.make import env_factory, frozen_image_groups, warn_if_frozen

    base = ["env.id=pettingzoo.butterfly.cooperative_pong_v6", "env.num_envs=1"]
    assert frozen_image_groups(env_factory(load_config(None, base))) == []
    forced = load_config(None, [*base, "env.kwargs={render_mode: null}"])
    with pytest.warns(UserWarning, match="render_mode=rgb_array"):
        assert warn_if_frozen(forced) == ["paddle"]


def test_only_changing_env_id_warns_about_the_default_horizon():
    """The embedded default (simple_spread: gamma 0.95, time limits terminal) on a time-limited Gymnasium env
    warns with the fix; MPE tasks and a config written for the env do not."""
    import warnings

    from marl.config import DEFAULT_CONFIG, load_config
    from marl.env.make import warn_if_default_horizon

    with pytest.warns(UserWarning, match="algo.gamma=0.99 algo.bootstrap_on_truncation=true"):
        assert warn_if_default_horizon(load_config(str(DEFAULT_CONFIG), ["env.id=CartPole-v1", "env.kwargs={}"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_default_horizon(load_config(str(DEFAULT_CONFIG), []))
        assert not warn_if_default_horizon(load_config(str(DEFAULT_CONFIG), ["env.id=mpe2.simple_tag_v3",
                                                                             "env.kwargs={}"]))
        assert not warn_if_default_horizon(load_config("configs/cartpole_ppo.yaml", []))

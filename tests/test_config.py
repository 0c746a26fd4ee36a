"""Config loading: strict keys, types, values, overrides, safe YAML."""

import pytest
import yaml

from marl.config import Config, ConfigError, from_dict, load_config, to_dict


def test_defaults_are_the_embedded_simple_spread_run():
    cfg = load_config()
    assert cfg.env.id == "mpe2.simple_spread_v3" and cfg.algo.name == "ppo" and cfg.model.sharing == "shared"


def test_dotted_overrides_and_derived_values():
    cfg = load_config(None, ["algo.lr=1e-3", "env.num_envs=4", "algo.num_steps=64", "seed=3"])
    assert cfg.algo.lr == 1e-3 and cfg.seed == 3
    assert cfg.batch_size == 256 and cfg.minibatch_size == 64
    assert "batch_size" not in to_dict(cfg)  # derived values are never written back


def test_yaml_file_with_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 1\nalgo:\n  name: ppo\n  gamma: 0.9\nenv:\n  id: CartPole-v1\n")
    cfg = load_config(p, ["algo.gamma=0.95"])
    assert cfg.seed == 1 and cfg.algo.gamma == 0.95 and cfg.env.id == "CartPole-v1"


def test_resolved_config_round_trips():
    cfg = load_config(None, ["model.hidden=[32, 32]", "env.kwargs={N: 2}"])
    again = from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize(
    "override, words",
    [
        (["algo.lrr=1"], ["algo.lrr", "did you mean algo.lr"]),
        (["sed=1"], ["sed", "did you mean seed"]),
        (["env.num_envs=two"], ["env.num_envs", "integer"]),
        (["algo.gamma=0"], ["algo.gamma", "(0, 1]"]),
        (["algo.gamma=1.5"], ["algo.gamma", "(0, 1]"]),
        (["algo.lr=-0.1"], ["algo.lr", "> 0"]),
        (["algo.num_minibatches=3"], ["algo.num_minibatches", "not divisible"]),
        (["env.num_envs=1", "algo.num_steps=4", "algo.num_minibatches=4"], ["advantage"]),
        (["algo.name=ppp"], ["algo.name", "did you mean 'ppo'"]),
        (["env.backend=threads"], ["env.backend", "'sync'"]),
        (["norm.obs=yes please"], ["norm.obs", "true or false"]),
        (["model.sharing=everyone"], ["model.sharing"]),
    ],
)
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(None, override)
    for w in words:
        assert w in str(info.value)


def test_python_yaml_tags_are_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.yaml"
    p.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="python tags are refused"):
        load_config(p)
    assert not marker.exists()


def test_config_is_not_a_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_sections_are_fresh_objects():
    a, b = Config(), Config()
    a.model.hidden.append(5)
    assert b.model.hidden == [64, 64]


def test_embedded_default_is_the_shipped_simple_spread_config():
    """``marl train`` without a file runs marl/default_config.yaml; it must stay configs/simple_spread_ppo.yaml."""
    from pathlib import Path

    from marl.config import DEFAULT_CONFIG

    shipped = Path(__file__).resolve().parents[1] / "configs" / "simple_spread_ppo.yaml"
    assert DEFAULT_CONFIG.read_text() == shipped.read_text()


def test_a_renamed_key_names_its_new_name():
    from marl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"health.alpha_floor_frac was renamed to health.ent_coef_floor_frac"):
        load_config(None, ["health.alpha_floor_frac=0.01"])
    with pytest.raises(ConfigError, match=r"algo.clip_vloss was renamed to algo.clip_value_loss"):
        load_config(None, ["algo.clip_vloss=true"])
    assert load_config(None, ["algo.clip_value_loss=true"]).algo.clip_value_loss


@pytest.mark.parametrize("override, key", [("log.backends=[tensorbord]", "log.backends"),
                                           ("log.interval=0", "log.interval"),
                                           ("distributed.timeout_s=0", "distributed.timeout_s")])
def test_section_value_checks_name_the_key(override, key):
    from marl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])

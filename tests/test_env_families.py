"""docs/envs.md stays true: every config it names trains one iteration, and its pinned versions are
constraints.txt's."""

from __future__ import annotations

import importlib.util
import math
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "envs.md"


def family_rows() -> list[dict[str, object]]:
    """The rows of the page's first table: family, pinned ``{package: version}``, config path."""
    rows, in_table = [], False
    for line in PAGE.read_text().splitlines():
        if line.startswith("| family"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if not in_table or line.startswith("| ---"):
            continue
        family, packages, _ids, config = (cell.strip() for cell in line.strip("|").split("|"))
        pins = dict(re.findall(r"`([A-Za-z0-9_.-]+)==([^`]+)`", packages))
        rows.append({"family": family, "pins": pins, "config": config.strip("`")})
    return rows


def constraints() -> dict[str, str]:
    """``constraints.txt`` as normalized name -> version."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


ROWS = family_rows()


def test_the_page_lists_every_family_with_its_pinned_versions():
    assert len(ROWS) >= 11, [r["family"] for r in ROWS]
    pinned = constraints()
    for row in ROWS:
        assert row["pins"] or row["family"].startswith("our envs"), f"{row['family']}: no pinned package"
        for name, version in row["pins"].items():
            assert normalize(name) in pinned, f"{row['family']}: {name} is not in constraints.txt"
            assert pinned[normalize(name)] == version, (
                f"docs/envs.md pins {name}=={version} for {row['family']}, constraints.txt has "
                f"{pinned[normalize(name)]}: update the page")


OPTIONAL = {"vmas": "vmas", "lbforaging:": "lbforaging", "rware:": "rware"}  # env id prefix -> package
SHORTER = {  # shorter episodes so the final one-episode evaluation stays quick
    "configs/pursuit_ppo.yaml": ["env.kwargs.max_cycles=20"],
    "configs/pistonball_small_ppo.yaml": ["env.kwargs.max_cycles=20"],
    "configs/rware_tiny_2ag_mappo.yaml": ["env.kwargs.max_steps=20"],
    "configs/vmas_navigation_ppo.yaml": ["env.kwargs.max_steps=20"],
}


@pytest.mark.parametrize("config", [r["config"] for r in ROWS])
def test_each_family_config_trains_one_iteration(config, make_config, monkeypatch):
    from marl.api import train
    from marl.config import load_config

    monkeypatch.chdir(ROOT)
    assert (ROOT / config).is_file(), f"docs/envs.md names {config}, which does not exist"
    env_id = load_config(config).env.id
    for prefix, package in OPTIONAL.items():
        if env_id.startswith(prefix) and importlib.util.find_spec(package) is None and not os.environ.get("CI"):
            pytest.skip(f"the {package} extra is not installed")
    cfg = load_config(config)
    backend = "batched" if cfg.env.backend == "batched" else "sync"
    tiny = [f"env.backend={backend}", "env.num_envs=2", "algo.num_steps=16", "total_env_steps=32",
            "algo.num_minibatches=1", "algo.update_epochs=1", "model.hidden=[16]", "eval.interval=0",
            "eval.episodes=1", "eval.num_envs=1", "checkpoint.interval=0", *SHORTER.get(config, [])]
    result = train(make_config(config, *tiny))
    assert result["env_steps"] == 32 and math.isfinite(result["final_eval"]["ep_return"])


def test_screen_sized_images_warn_with_the_resize_fix():
    """cooperative_pong's 280x480x3 frames with the default PPO rollout hold 1.2 GiB: a first try ran out of
    memory-bound time (10 GB resident); the warning names env.resize. A resized config is quiet."""
    import warnings

    from marl.config import DEFAULT_CONFIG, load_config
    from marl.env.make import env_spec, warn_if_large_images

    base = ["env.id=pettingzoo.butterfly.cooperative_pong_v6", "env.kwargs={}", "env.backend=sync"]
    cfg = load_config(DEFAULT_CONFIG, base)
    with pytest.warns(UserWarning, match=r"280x480x3 images \(one rollout holds 1.2 GiB.*env.resize: \[84, 84\]"):
        assert warn_if_large_images(cfg, env_spec(cfg)) == ["paddle"]
    small = load_config(DEFAULT_CONFIG, [*base, "env.resize=[84,84]"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_large_images(small, env_spec(small)) == []


def test_a_vmas_id_without_the_batched_backend_is_one_plain_line():
    pytest.importorskip("vmas")
    from marl.config import ConfigError, load_config
    from marl.env.make import env_spec

    with pytest.raises(ConfigError) as err:
        env_spec(load_config(None, ["env.id=vmas:navigation"]))
    assert str(err.value) == "env.id='vmas:navigation': VMAS envs are batched simulations; set env.backend=batched"

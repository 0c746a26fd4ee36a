"""Every shipped config loads and validates: a renamed or removed key, or a value the checks refuse, fails here
before a user meets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from marl.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) > 30


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path):
    cfg = load_config(str(path))
    assert cfg.total_env_steps > 0 and cfg.env.id

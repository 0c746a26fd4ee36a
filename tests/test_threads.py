"""PPO update threads: resolution from the config and the scoped thread count."""

import os

import pytest
import torch

from marl.config import load_config
from marl.on_policy.trainer import torch_threads, update_threads


def test_update_threads_auto_uses_the_idle_worker_cores_only_with_workers():
    auto = load_config(None, [])
    assert update_threads(auto, workers=0) == auto.torch_threads == 1
    assert update_threads(auto, workers=2) == min(2, os.cpu_count() or 1)
    assert update_threads(auto, workers=64) == min(4, os.cpu_count() or 1)
    assert update_threads(auto, workers=2, on_cpu=False) == 1  # a GPU learner leaves the CPU threads alone
    assert update_threads(load_config(None, ["update_threads=3"]), workers=0) == 3
    assert update_threads(load_config(None, ["update_threads=0", "torch_threads=2"]), workers=2) == 2


def test_torch_threads_restores_the_count_even_after_an_error():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before


def test_bad_update_threads_is_a_config_error():
    from marl.config import ConfigError

    with pytest.raises(ConfigError, match="update_threads"):
        load_config(None, ["update_threads=-2"])
